// Flash-style attention forward (docs/BACKENDS.md `attention_fwd` and `lse_fwd`, DESIGN 1.1
// and 1.3):
//
//   O_h = P_h V_h,  P_h = softmax(s Q_h K_h^T),  L_h[i] = log sum_j exp(s q_i . k_j)
//
// One kernel for both ops: kHasV = true is attention_fwd (O and L), kHasV = false is lse_fwd,
// the same online softmax without the value tiles, the P tile and the output accumulator (the
// normalizer self_cross needs when the caller did not keep the one of a flash forward).
//
// One block owns kBlockM query rows of one (batch, head) and streams keys (and values) in tiles
// of kBlockN with the online softmax of FlashAttention-2 (common.cuh online_softmax_update): per
// row a running max m, a running sum l of exp(score - m) and an unnormalized output accumulator,
// rescaled by exp(m_old - m_new) whenever the max grows and divided by l once at the end. Scores
// are kept in the log2 domain (s * log2 e folded into the scale) so the exponentials are exp2f.
// Everything accumulates in float32; out is written in the input dtype, L in float32 (natural
// log) for the backward and for self_cross.
//
// Work split inside a block: kLanes threads per query row; lane l computes the scores of the
// keys l, l + kLanes, ... of each tile and accumulates the output columns l, l + kLanes, ...
// The probabilities of a tile go through shared memory (sP) so that every lane of the row can
// multiply them with its own value columns. D and Dv share one padded width kD (zero-filled).
//
// A correctness reference, not a fast path: scalar FFMA on float32 shared-memory tiles (no
// tensor cores), 4-19x slower than the Triton kernels on an H200; backend="auto" never picks it.
// The separate attention and lse kernels ran on an H200 (sm_90), 2026-12-04: forward-rule tests
// passed and compute-sanitizer (memcheck, racecheck, initcheck, synccheck) found no error
// (benchmarks/results/gpu-h200-2026-12-04/). This merged kernel (kHasV, the shared online-softmax
// update) has only been compiled with nvcc (sm_80, sm_90) and run under the host emulation
// (csrc/emulation, tests/test_build.py), not on a GPU; not run on sm_80.
#pragma once

#include "common.cuh"
#include "params.h"

namespace fasttrack {

// kHasV = false (lse only) streams wider key tiles: it keeps no V tile and no P tile.
template <bool kHasV>
struct AttentionConfig {
  static constexpr int kThreads = 256;
  static constexpr int kLanes = 4;
  static constexpr int kBlockM = kThreads / kLanes;  // 64 query rows
  static constexpr int kBlockN = kHasV ? 32 : 64;    // keys per tile
  static constexpr int kColsPerLane = kBlockN / kLanes;
  static constexpr int kLdP = kBlockN + 1;

  template <int kD>
  static constexpr size_t smem_bytes() {
    return kHasV ? sizeof(float) * ((kBlockM + 2 * kBlockN) * (kD + 1) + kBlockM * kLdP)
                 : sizeof(float) * (kBlockM + kBlockN) * (kD + 1);
  }
};

template <typename T, int kD, bool kHasV>
__global__ void __launch_bounds__(AttentionConfig<kHasV>::kThreads) attention_fwd_kernel(const AttnParams p) {
  using C = AttentionConfig<kHasV>;
  constexpr int kLd = kD + 1;
  constexpr int kOutPerLane = kHasV ? kD / C::kLanes : 1;
  extern __shared__ float smem[];
  float* sQ = smem;                   // [kBlockM][kLd]
  float* sK = sQ + C::kBlockM * kLd;  // [kBlockN][kLd]
  float* sV = sK + C::kBlockN * kLd;  // [kBlockN][kLd]   (kHasV only)
  float* sP = sV + C::kBlockN * kLd;  // [kBlockM][kLdP]  (kHasV only)

  const int m0 = blockIdx.x * C::kBlockM;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int row = threadIdx.x / C::kLanes;
  const int lane = threadIdx.x % C::kLanes;

  const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
  const float scale_log2 = p.scale * kLog2e;

  load_tile<T, C::kBlockM, kD, C::kThreads>(sQ, kLd, q, p.q_stride[2], p.q_stride[3], m0, p.nq, p.d);

  [[maybe_unused]] float acc[kOutPerLane];  // the lse-only variant keeps no output
#pragma unroll
  for (int c = 0; c < kOutPerLane; ++c) acc[c] = 0.f;
  RowSoftmax row_softmax;
  [[maybe_unused]] float* p_row = sP + row * C::kLdP;

  for (int n0 = 0; n0 < p.nk; n0 += C::kBlockN) {
    __syncthreads();  // the previous K (and V) tiles are no longer read
    load_tile<T, C::kBlockN, kD, C::kThreads>(sK, kLd, k, p.k_stride[2], p.k_stride[3], n0, p.nk, p.d);
    if constexpr (kHasV) {
      const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + h * p.v_stride[1];
      load_tile<T, C::kBlockN, kD, C::kThreads>(sV, kLd, v, p.v_stride[2], p.v_stride[3], n0, p.nk, p.dv);
    }
    __syncthreads();

    float s[C::kColsPerLane];
    dot_rows<kD, C::kColsPerLane, C::kLanes>(s, sQ + row * kLd, sK, kLd, lane);
#pragma unroll
    for (int c = 0; c < C::kColsPerLane; ++c) {
      const bool valid = n0 + lane + C::kLanes * c < p.nk;
      s[c] = valid ? s[c] * scale_log2 : -INFINITY;
    }
    [[maybe_unused]] const float rescale = online_softmax_update<C::kLanes>(row_softmax, s);  // s: probabilities now
    if constexpr (kHasV) {
#pragma unroll
      for (int c = 0; c < C::kColsPerLane; ++c) p_row[lane + C::kLanes * c] = s[c];
      __syncwarp();  // the row's probabilities were written by the lanes of this warp

#pragma unroll
      for (int c = 0; c < kOutPerLane; ++c) acc[c] *= rescale;
#pragma unroll 4
      for (int j = 0; j < C::kBlockN; ++j) {
        const float pj = p_row[j];
        const float* v_row = sV + j * kLd + lane;
#pragma unroll
        for (int c = 0; c < kOutPerLane; ++c) acc[c] = fmaf(pj, v_row[C::kLanes * c], acc[c]);
      }
      __syncwarp();  // sP is rewritten by the next tile
    }
  }

  const int i = m0 + row;
  if (i < p.nq) {
    if constexpr (kHasV) {
      // An empty softmax (Nk == 0) gives O = 0 and L = -inf.
      const float inv_l = row_softmax.inv_sum();
      T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] +
               static_cast<int64_t>(i) * p.out_stride[2];
#pragma unroll
      for (int c = 0; c < kOutPerLane; ++c) {
        const int col = lane + C::kLanes * c;
        if (col < p.dv) out[col * p.out_stride[3]] = from_float<T>(acc[c] * inv_l);
      }
    }
    if (lane == 0) {
      p.lse[b * p.lse_stride[0] + h * p.lse_stride[1] + static_cast<int64_t>(i) * p.lse_stride[2]] =
          row_softmax.lse();
    }
  }
}

}  // namespace fasttrack
