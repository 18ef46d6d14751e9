// Host-side launch plumbing shared by the launchers: device selection, dynamic shared memory
// opt-in, the kernel parameters (one filler per params struct) and the post-launch error check.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "check.h"
#include "params.h"

namespace fasttrack {

// The extension carries its own (static) CUDA runtime, whose current device is independent of
// torch's, so every launcher selects the tensors' device explicitly and restores the previous
// one afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    int count = 0;
    FT_CUDA_CHECK(cudaGetDeviceCount(&count));
    FT_CHECK(device >= 0 && device < count, "argument 'device' = ", device,
             " is not a CUDA device index (", count, " devices visible)");
    FT_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) FT_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

inline int max_smem_optin(int device) {
  int bytes = 0;
  FT_CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return bytes;
}

// Kernels needing more than the default 48 KiB of dynamic shared memory must opt in per
// function; more than the device allows is a ValueError naming the sizes that caused it.
template <typename Kernel>
void set_smem(Kernel kernel, size_t bytes, int device, const char* sizes) {
  const int limit = max_smem_optin(device);
  FT_CHECK(bytes <= static_cast<size_t>(limit), "tile of ", bytes,
           " bytes of shared memory exceeds this device's limit of ", limit, " (", sizes, ")");
  if (bytes > 48 * 1024) {
    FT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)));
  }
}

inline void copy_strides(int64_t* dst, const std::vector<int64_t>& src) {
  for (size_t i = 0; i < src.size(); ++i) dst[i] = src[i];
}

inline bool strides_nonnegative(const std::vector<int64_t>& s) {
  for (int64_t x : s) {
    if (x < 0) return false;
  }
  return true;
}

// Launch errors (bad configuration, missing kernel image for this GPU) surface here;
// asynchronous faults surface at the next synchronizing call, as with any CUDA op.
inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(detail::concat("fasttrack._C: launching ", kernel,
                                            " failed: ", cudaGetErrorString(err)));
  }
}

// Sizes every attention-family launcher shares. Grid dimensions y and z hold heads and batch
// (at most 65535); sequence lengths stay below 2^30 so tile offsets never overflow an int.
constexpr int64_t kMaxGridYZ = 65535;
constexpr int64_t kMaxSeqLen = int64_t{1} << 30;
constexpr int64_t kMaxHeadDim = 128;

inline void check_qk_sizes(int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t d,
                           double scale, int dtype) {
  FT_CHECK_RANGE("B", batch, int64_t{0}, kMaxGridYZ);
  FT_CHECK_RANGE("H", heads, int64_t{0}, kMaxGridYZ);
  FT_CHECK_RANGE("Nq", nq, int64_t{0}, kMaxSeqLen);
  FT_CHECK_RANGE("Nk", nk, int64_t{0}, kMaxSeqLen);
  FT_CHECK_RANGE("D", d, int64_t{1}, kMaxHeadDim);
  FT_CHECK(std::isfinite(static_cast<float>(scale)), "argument 'scale' = ", scale,
           " is not a finite float32");
  FT_CHECK(dtype >= 0 && dtype <= 2, "argument 'dtype' = ", dtype,
           " is not a dtype code (0 float32, 1 float16, 2 bfloat16)");
}

inline cudaStream_t as_stream(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// The AttnParams of lse_fwd, attention_fwd and cross_attention_fwd (attention.cu,
// cross_attention.cu): the one place where the entry points' raw pointers, sizes and strides
// become kernel parameters. Pointers an op does not take are 0 (null) and their strides empty
// (left zero): lse_fwd passes no v, out, probs and Dv = 0; attention_fwd no probs.
inline AttnParams attn_params(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse,
                              uintptr_t probs, int64_t batch, int64_t heads, int64_t nq, int64_t nk,
                              int64_t d, int64_t dv, const std::vector<int64_t>& q_stride,
                              const std::vector<int64_t>& k_stride, const std::vector<int64_t>& v_stride,
                              const std::vector<int64_t>& out_stride, const std::vector<int64_t>& lse_stride,
                              const std::vector<int64_t>& probs_stride, double scale, int dtype) {
  AttnParams p{};
  p.q = reinterpret_cast<const void*>(q);
  p.k = reinterpret_cast<const void*>(k);
  p.v = reinterpret_cast<const void*>(v);
  p.out = reinterpret_cast<void*>(out);
  p.lse = reinterpret_cast<float*>(lse);
  p.probs = reinterpret_cast<void*>(probs);
  p.batch = static_cast<int>(batch);
  p.heads = static_cast<int>(heads);
  p.nq = static_cast<int>(nq);
  p.nk = static_cast<int>(nk);
  p.d = static_cast<int>(d);
  p.dv = static_cast<int>(dv);
  copy_strides(p.q_stride, q_stride);
  copy_strides(p.k_stride, k_stride);
  copy_strides(p.v_stride, v_stride);
  copy_strides(p.out_stride, out_stride);
  copy_strides(p.lse_stride, lse_stride);
  copy_strides(p.probs_stride, probs_stride);
  p.scale = static_cast<float>(scale);
  p.dtype = static_cast<DType>(dtype);
  return p;
}

// The SelfCrossParams of self_cross_fwd (self_cross.cu), filled the same way.
inline SelfCrossParams self_cross_params(uintptr_t q, uintptr_t k, uintptr_t cross, uintptr_t lse,
                                         uintptr_t out, int64_t batch, int64_t heads, int64_t nq,
                                         int64_t nk, int64_t d, int64_t t,
                                         const std::vector<int64_t>& q_stride,
                                         const std::vector<int64_t>& k_stride,
                                         const std::vector<int64_t>& cross_stride,
                                         const std::vector<int64_t>& lse_stride,
                                         const std::vector<int64_t>& out_stride, double scale, int dtype) {
  SelfCrossParams p{};
  p.q = reinterpret_cast<const void*>(q);
  p.k = reinterpret_cast<const void*>(k);
  p.cross = reinterpret_cast<const void*>(cross);
  p.lse = reinterpret_cast<const float*>(lse);
  p.out = reinterpret_cast<void*>(out);
  p.batch = static_cast<int>(batch);
  p.heads = static_cast<int>(heads);
  p.nq = static_cast<int>(nq);
  p.nk = static_cast<int>(nk);
  p.d = static_cast<int>(d);
  p.t = static_cast<int>(t);
  copy_strides(p.q_stride, q_stride);
  copy_strides(p.k_stride, k_stride);
  copy_strides(p.cross_stride, cross_stride);
  copy_strides(p.lse_stride, lse_stride);
  copy_strides(p.out_stride, out_stride);
  p.scale = static_cast<float>(scale);
  p.dtype = static_cast<DType>(dtype);
  return p;
}

}  // namespace fasttrack
