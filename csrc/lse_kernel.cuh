// Row log-sum-exp of the attention scores (docs/BACKENDS.md `lse_fwd`, DESIGN 1.1):
//
//   L_h[i] = log sum_j exp(s q_i . k_j)
//
// the normalizer self_cross needs when the caller did not keep the one of a flash forward.
// One block owns kBlockM query rows of one (batch, head) and streams the keys in tiles of
// kBlockN, keeping a running max m and a running sum l of exp(score - m) per row (the online
// softmax of FlashAttention without the value accumulator). Scores live in the log2 domain
// (s * log2 e folded into the scale) so the exponentials are exp2f; the result is converted
// back: L = (m + log2 l) * ln 2.
//
// Run on a GPU once: H200 (sm_90), 2026-12-04, forward-rule tests passed and compute-sanitizer
// (memcheck, racecheck, initcheck, synccheck) found no error (benchmarks/results/gpu-h200-2026-12-04/); not run on sm_80.
#pragma once

#include "common.cuh"
#include "params.h"

namespace fasttrack {

struct LseConfig {
  static constexpr int kThreads = 256;
  static constexpr int kLanes = 4;                     // threads per query row
  static constexpr int kBlockM = kThreads / kLanes;    // 64 query rows per block
  static constexpr int kBlockN = 64;                   // keys per tile
  static constexpr int kColsPerLane = kBlockN / kLanes;

  template <int kD>
  static constexpr size_t smem_bytes() {
    return sizeof(float) * (kBlockM + kBlockN) * (kD + 1);
  }
};

template <typename T, int kD>
__global__ void __launch_bounds__(LseConfig::kThreads) lse_fwd_kernel(const AttnParams p) {
  using C = LseConfig;
  constexpr int kLd = kD + 1;
  extern __shared__ float smem[];
  float* sQ = smem;                  // [kBlockM][kLd]
  float* sK = sQ + C::kBlockM * kLd;  // [kBlockN][kLd]

  const int m0 = blockIdx.x * C::kBlockM;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int row = threadIdx.x / C::kLanes;
  const int lane = threadIdx.x % C::kLanes;

  const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
  const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
  const float scale_log2 = p.scale * kLog2e;

  load_tile<T, C::kBlockM, kD, C::kThreads>(sQ, kLd, q, p.q_stride[2], p.q_stride[3], m0, p.nq, p.d);

  float m_run = -INFINITY;
  float l_run = 0.f;
  for (int n0 = 0; n0 < p.nk; n0 += C::kBlockN) {
    __syncthreads();  // the previous key tile is no longer read
    load_tile<T, C::kBlockN, kD, C::kThreads>(sK, kLd, k, p.k_stride[2], p.k_stride[3], n0, p.nk, p.d);
    __syncthreads();

    float s[C::kColsPerLane];
    dot_rows<kD, C::kColsPerLane, C::kLanes>(s, sQ + row * kLd, sK, kLd, lane);
    float tile_max = -INFINITY;
#pragma unroll
    for (int c = 0; c < C::kColsPerLane; ++c) {
      const bool valid = n0 + lane + C::kLanes * c < p.nk;
      s[c] = valid ? s[c] * scale_log2 : -INFINITY;
      tile_max = fmaxf(tile_max, s[c]);
    }
    const float m_new = fmaxf(m_run, group_max<C::kLanes>(tile_max));
    // While every score seen is -inf (only possible with infinite inputs) m_new is -inf;
    // subtracting 0 instead keeps exp2f(-inf - -inf) = NaN out of the sums.
    const float m_ref = m_new == -INFINITY ? 0.f : m_new;
    float tile_sum = 0.f;
#pragma unroll
    for (int c = 0; c < C::kColsPerLane; ++c) tile_sum += exp2f(s[c] - m_ref);
    l_run = l_run * exp2f(m_run - m_ref) + group_sum<C::kLanes>(tile_sum);
    m_run = m_new;
  }

  const int i = m0 + row;
  if (lane == 0 && i < p.nq) {
    // l_run == 0 only when Nk == 0: the log of an empty sum is -inf.
    const float lse = l_run > 0.f ? (m_run + log2f(l_run)) * kLn2 : -INFINITY;
    p.lse[b * p.lse_stride[0] + h * p.lse_stride[1] + static_cast<int64_t>(i) * p.lse_stride[2]] = lse;
  }
}

}  // namespace fasttrack
