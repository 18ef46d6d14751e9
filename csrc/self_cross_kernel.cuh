// Head-mean self-attention map, transposed, applied to a cross map (docs/BACKENDS.md
// `self_cross_fwd`, DESIGN 1.1):
//
//   out[b, j, t] = (1/H) sum_h sum_i exp(s q_i . k_j - L_h[i]) C[b, i, t]      = (S^T C)[j, t]
//
// S = (1/H) sum_h P_h is never formed. The loop has the shape of FlashAttention-2's
// dV = P^T dO pass: a block owns kBlockN keys j of one batch element and keeps their (kBlockN, T)
// output in registers; it loops over the heads and, inside, over query tiles of kBlockM rows,
// recomputing each probability tile from q, k and the row log-sum-exp L (no online softmax is
// needed: L already normalizes every row). C does not depend on the head, so all heads add into
// one accumulator and the 1/H is applied once at the end.
//
// Work split: kLanes threads per key row; lane l computes P for the queries l, l + kLanes, ...
// of a tile and accumulates the token columns l, l + kLanes, ... The probabilities of a tile go
// through shared memory (sP, one row per key) so that every lane can use all of them.
// Padded query rows get L = +inf, hence P = 0; padded keys are never written.
//
// No softmax runs here: L normalizes every P tile, so this is the one kernel of the family that
// does not use common.cuh's online-softmax update.
//
// A correctness reference (scalar FFMA, no tensor cores; 4-19x slower than the Triton kernels on
// an H200): backend="auto" never picks it. Run on a GPU once: H200 (sm_90), 2026-12-04,
// forward-rule tests passed and compute-sanitizer (memcheck, racecheck, initcheck, synccheck)
// found no error (benchmarks/results/gpu-h200-2026-12-04/); its launcher's params filling has
// changed since and has only been compiled and emulated, not run on a GPU; not run on sm_80.
#pragma once

#include "common.cuh"
#include "params.h"

namespace fasttrack {

struct SelfCrossConfig {
  static constexpr int kThreads = 256;
  static constexpr int kLanes = 8;
  static constexpr int kBlockN = kThreads / kLanes;  // 32 keys per block
  static constexpr int kBlockM = 32;                 // queries per inner tile
  static constexpr int kQueriesPerLane = kBlockM / kLanes;
  static constexpr int kLdP = kBlockM + 1;

  template <int kD, int kT>
  static constexpr size_t smem_bytes() {
    return sizeof(float) * ((kBlockN + kBlockM) * (kD + 1) + kBlockM * kT + kBlockM + kBlockN * kLdP);
  }
};

template <typename T, int kD, int kT>
__global__ void __launch_bounds__(SelfCrossConfig::kThreads) self_cross_fwd_kernel(const SelfCrossParams p) {
  using C = SelfCrossConfig;
  constexpr int kLd = kD + 1;
  constexpr int kTokensPerLane = kT / C::kLanes;
  extern __shared__ float smem[];
  float* sK = smem;                    // [kBlockN][kLd]
  float* sQ = sK + C::kBlockN * kLd;   // [kBlockM][kLd]
  float* sC = sQ + C::kBlockM * kLd;   // [kBlockM][kT]
  float* sL = sC + C::kBlockM * kT;    // [kBlockM], L * log2 e
  float* sP = sL + C::kBlockM;         // [kBlockN][kLdP], P^T of the tile

  const int n0 = blockIdx.x * C::kBlockN;
  const int b = blockIdx.y;
  const int row = threadIdx.x / C::kLanes;
  const int lane = threadIdx.x % C::kLanes;
  const float scale_log2 = p.scale * kLog2e;
  const T* cross = static_cast<const T*>(p.cross) + b * p.cross_stride[0];
  float* p_row = sP + row * C::kLdP;

  float acc[kTokensPerLane];
#pragma unroll
  for (int c = 0; c < kTokensPerLane; ++c) acc[c] = 0.f;

  for (int h = 0; h < p.heads; ++h) {
    const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
    const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
    const float* lse = p.lse + b * p.lse_stride[0] + h * p.lse_stride[1];
    __syncthreads();  // the previous head no longer reads sK
    load_tile<T, C::kBlockN, kD, C::kThreads>(sK, kLd, k, p.k_stride[2], p.k_stride[3], n0, p.nk, p.d);

    for (int i0 = 0; i0 < p.nq; i0 += C::kBlockM) {
      __syncthreads();  // the previous query tile no longer reads sQ, sC, sL
      load_tile<T, C::kBlockM, kD, C::kThreads>(sQ, kLd, q, p.q_stride[2], p.q_stride[3], i0, p.nq, p.d);
      load_tile<T, C::kBlockM, kT, C::kThreads>(sC, kT, cross, p.cross_stride[1], p.cross_stride[2], i0,
                                                p.nq, p.t);
      for (int r = threadIdx.x; r < C::kBlockM; r += C::kThreads) {
        const int gi = i0 + r;
        sL[r] = gi < p.nq ? lse[static_cast<int64_t>(gi) * p.lse_stride[2]] * kLog2e : INFINITY;
      }
      __syncthreads();

      float s[C::kQueriesPerLane];
      dot_rows<kD, C::kQueriesPerLane, C::kLanes>(s, sK + row * kLd, sQ, kLd, lane);
#pragma unroll
      for (int c = 0; c < C::kQueriesPerLane; ++c) {
        const int il = lane + C::kLanes * c;
        p_row[il] = exp2f(s[c] * scale_log2 - sL[il]);
      }
      __syncwarp();  // the key row's P was written by the lanes of this warp

#pragma unroll 4
      for (int il = 0; il < C::kBlockM; ++il) {
        const float pi = p_row[il];
        const float* c_row = sC + il * kT + lane;
#pragma unroll
        for (int c = 0; c < kTokensPerLane; ++c) acc[c] = fmaf(pi, c_row[C::kLanes * c], acc[c]);
      }
    }
  }

  const int j = n0 + row;
  if (j < p.nk) {
    const float inv_heads = 1.f / static_cast<float>(p.heads);
    T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + static_cast<int64_t>(j) * p.out_stride[1];
#pragma unroll
    for (int c = 0; c < kTokensPerLane; ++c) {
      const int t = lane + C::kLanes * c;
      if (t < p.t) out[t * p.out_stride[2]] = from_float<T>(acc[c] * inv_heads);
    }
  }
}

}  // namespace fasttrack
