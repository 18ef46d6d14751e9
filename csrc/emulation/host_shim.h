// Host emulation of the CUDA features the forward kernels use, so that their device code can be
// compiled by a host C++ compiler and run on a machine without a GPU (emulate_kernels.cpp,
// tests/test_build.py). Each CUDA thread of a block is a std::thread; __syncthreads and
// __syncwarp are std::barriers; warp shuffles exchange values through a slot array between two
// warp barriers. Blocks run one after another, all sharing one `smem` array, which is filled with
// a sentinel before each block: a read of shared memory the block never wrote shows up as a wrong
// result, and a write past the launch's dynamic shared-memory size is reported by launch().
//
// With -fsanitize=thread a missing barrier shows up as a data race (the racecheck of the host);
// with -fsanitize=address an out-of-bounds global access shows up as a heap overflow (memcheck).
// It emulates semantics, not timing or the memory model of a GPU.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <barrier>
#include <cmath>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __shared__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__

namespace emu {
constexpr size_t kSmemFloats = 1 << 16;  // 256 KiB, above every kernel's dynamic shared memory
constexpr size_t kGuardFloats = 4096;
constexpr float kSentinel = -12345.f;
}  // namespace emu

namespace fasttrack {
// The kernels declare `extern __shared__ float smem[];` inside namespace fasttrack.
inline float smem[emu::kSmemFloats + emu::kGuardFloats];
}  // namespace fasttrack

inline thread_local uint3 threadIdx;
inline uint3 blockIdx;

namespace emu {
inline std::unique_ptr<std::barrier<>> block_barrier;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline float shuffle_slots[1024];
}  // namespace emu

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float x, int lane_mask) {
  emu::shuffle_slots[threadIdx.x] = x;
  __syncwarp();
  const float y = emu::shuffle_slots[threadIdx.x ^ lane_mask];
  __syncwarp();
  return y;
}

namespace emu {

// Runs `body` (one kernel call) for every block of `grid` with `threads` threads per block.
// Returns false when a block wrote shared memory past `smem_bytes`.
template <typename Body>
bool launch(dim3 grid, int threads, size_t smem_bytes, Body&& body) {
  const size_t used = smem_bytes / sizeof(float);
  if (used > kSmemFloats || threads % 32 != 0) return false;
  bool ok = true;
  for (unsigned z = 0; z < grid.z; ++z) {
    for (unsigned y = 0; y < grid.y; ++y) {
      for (unsigned x = 0; x < grid.x; ++x) {
        blockIdx = make_uint3(x, y, z);
        for (size_t i = 0; i < used + kGuardFloats; ++i) fasttrack::smem[i] = i < used ? kSentinel : NAN;
        block_barrier = std::make_unique<std::barrier<>>(threads);
        warp_barriers.clear();
        for (int w = 0; w < threads / 32; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (int t = 0; t < threads; ++t) {
          pool.emplace_back([&body, t] {
            threadIdx = make_uint3(t, 0, 0);
            body();
          });
        }
        for (auto& th : pool) th.join();
        for (size_t i = used; i < used + kGuardFloats; ++i) ok = ok && std::isnan(fasttrack::smem[i]);
      }
    }
  }
  if (!ok) std::fprintf(stderr, "shared memory written past the %zu bytes of the launch\n", smem_bytes);
  return ok;
}

}  // namespace emu
