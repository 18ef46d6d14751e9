// Cross-attention forward with the head-mean map made in the epilogue (docs/BACKENDS.md
// `cross_attention_fwd`, DESIGN 1.2):
//
//   O_h = P_h V_h,  P_h = softmax(s Q_h K_h^T),  L_h = log rowsum exp(s Q_h K_h^T),
//   probs = (1/H) sum_h P_h                      (B, Nq, Nk), never a (B, H, Nq, Nk) tensor
//
// Cross attention has few keys (T = 77 text tokens in Stable Diffusion), so a whole score row
// fits in shared memory and P is normalized exactly before it meets V: one block owns kBlockM
// query rows of one batch element and loops over the heads; per head it (1) writes the scores of
// all keys to sS while folding the row's max and sum with the online-softmax update every kernel
// here shares (common.cuh), (2) normalizes each row with them (giving L_h), adds P_h / H to the
// running head mean sAcc, and (3) streams V tiles for O_h = P_h V_h. probs is written once, after the
// last head, so no atomics and no float16 partial sums are involved.
//
// Shared memory grows with Nk (two float rows of Nk per query row); the launcher rejects an Nk
// whose tile exceeds the device's opt-in limit (about 1600 keys on H100, 1080 on A100 at
// D = 128), see cross_attention_max_nk.
//
// A correctness reference (scalar FFMA, no tensor cores); backend="auto" never picks it. Run on a
// GPU once: H200 (sm_90), 2026-12-04, forward-rule tests passed and compute-sanitizer (memcheck,
// racecheck, initcheck, synccheck) found no error (benchmarks/results/gpu-h200-2026-12-04/).
// Since then its softmax moved to the shared online-softmax update (common.cuh): that version has
// only been compiled with nvcc and run under the host emulation (csrc/emulation), not on a GPU;
// not run on sm_80.
#pragma once

#include "common.cuh"
#include "params.h"

namespace fasttrack {

struct CrossAttentionConfig {
  static constexpr int kThreads = 256;
  static constexpr int kLanes = 16;
  static constexpr int kBlockM = kThreads / kLanes;  // 16 query rows
  static constexpr int kBlockN = 32;                 // keys per K / V tile
  static constexpr int kColsPerLane = kBlockN / kLanes;

  // Score rows are padded to whole key tiles, plus 16 floats so that the two query rows of a
  // warp fall into different halves of the 32 banks.
  __host__ __device__ static constexpr int nk_padded(int nk) {
    return (nk + kBlockN - 1) / kBlockN * kBlockN;
  }
  __host__ __device__ static constexpr int score_ld(int nk) { return nk_padded(nk) + 16; }

  template <int kD>
  static constexpr size_t smem_bytes(int nk) {
    return sizeof(float) * (static_cast<size_t>(kBlockM + kBlockN) * (kD + 1) +
                            2 * static_cast<size_t>(kBlockM) * score_ld(nk));
  }
};

template <typename T, int kD>
__global__ void __launch_bounds__(CrossAttentionConfig::kThreads)
    cross_attention_fwd_kernel(const AttnParams p) {
  using C = CrossAttentionConfig;
  constexpr int kLd = kD + 1;
  constexpr int kOutPerLane = kD / C::kLanes;
  const int nk_pad = C::nk_padded(p.nk);
  const int ld_s = C::score_ld(p.nk);
  extern __shared__ float smem[];
  float* sQ = smem;                          // [kBlockM][kLd]
  float* sKV = sQ + C::kBlockM * kLd;        // [kBlockN][kLd], K tiles then V tiles
  float* sS = sKV + C::kBlockN * kLd;        // [kBlockM][ld_s], scores then P_h
  float* sAcc = sS + C::kBlockM * ld_s;      // [kBlockM][ld_s], sum_h P_h / H

  const int m0 = blockIdx.x * C::kBlockM;
  const int b = blockIdx.y;
  const int row = threadIdx.x / C::kLanes;
  const int lane = threadIdx.x % C::kLanes;
  const int i = m0 + row;
  const float scale_log2 = p.scale * kLog2e;
  const float inv_heads = 1.f / static_cast<float>(p.heads);
  float* s_row = sS + row * ld_s;
  float* acc_row = sAcc + row * ld_s;

  // A lane only ever touches the score columns j = lane (mod kLanes) outside the P.V loop:
  // key tiles start at multiples of kBlockN, a multiple of kLanes.
  for (int j = lane; j < nk_pad; j += C::kLanes) acc_row[j] = 0.f;

  for (int h = 0; h < p.heads; ++h) {
    const T* q = static_cast<const T*>(p.q) + b * p.q_stride[0] + h * p.q_stride[1];
    const T* k = static_cast<const T*>(p.k) + b * p.k_stride[0] + h * p.k_stride[1];
    const T* v = static_cast<const T*>(p.v) + b * p.v_stride[0] + h * p.v_stride[1];
    __syncthreads();  // the previous head no longer reads sQ, sKV
    load_tile<T, C::kBlockM, kD, C::kThreads>(sQ, kLd, q, p.q_stride[2], p.q_stride[3], m0, p.nq, p.d);

    // (1) scores of every key, scaled to the log2 domain (padded keys -inf), kept in sS, and
    // the row's max and sum folded tile by tile (common.cuh online_softmax_update, the update
    // attention_fwd uses; here the probabilities it returns are not needed).
    RowSoftmax row_softmax;
    for (int n0 = 0; n0 < p.nk; n0 += C::kBlockN) {
      __syncthreads();
      load_tile<T, C::kBlockN, kD, C::kThreads>(sKV, kLd, k, p.k_stride[2], p.k_stride[3], n0, p.nk, p.d);
      __syncthreads();
      float s[C::kColsPerLane];
      dot_rows<kD, C::kColsPerLane, C::kLanes>(s, sQ + row * kLd, sKV, kLd, lane);
#pragma unroll
      for (int c = 0; c < C::kColsPerLane; ++c) {
        const int col = n0 + lane + C::kLanes * c;
        s[c] = col < p.nk ? s[c] * scale_log2 : -INFINITY;
        s_row[col] = s[c];
      }
      online_softmax_update<C::kLanes>(row_softmax, s);
    }

    // (2) the exact softmax of the row from its final max and sum (an empty row, Nk == 0,
    // gives P = 0 and L = -inf); P_h / H joins the running head mean.
    const float m_ref = row_softmax.ref();
    const float inv_l = row_softmax.inv_sum();
    for (int j = lane; j < nk_pad; j += C::kLanes) {
      const float pj = exp2f(s_row[j] - m_ref) * inv_l;
      s_row[j] = pj;
      acc_row[j] += pj * inv_heads;
    }
    if (lane == 0 && i < p.nq) {
      p.lse[b * p.lse_stride[0] + h * p.lse_stride[1] + static_cast<int64_t>(i) * p.lse_stride[2]] =
          row_softmax.lse();
    }
    __syncwarp();  // the whole P row is read by every lane of the row below

    // (3) O_h = P_h V_h, lane owning output columns lane + kLanes * c.
    float o[kOutPerLane];
#pragma unroll
    for (int c = 0; c < kOutPerLane; ++c) o[c] = 0.f;
    for (int n0 = 0; n0 < p.nk; n0 += C::kBlockN) {
      __syncthreads();
      load_tile<T, C::kBlockN, kD, C::kThreads>(sKV, kLd, v, p.v_stride[2], p.v_stride[3], n0, p.nk, p.dv);
      __syncthreads();
#pragma unroll 4
      for (int j = 0; j < C::kBlockN; ++j) {
        const float pj = s_row[n0 + j];
        const float* v_row = sKV + j * kLd + lane;
#pragma unroll
        for (int c = 0; c < kOutPerLane; ++c) o[c] = fmaf(pj, v_row[C::kLanes * c], o[c]);
      }
    }
    if (i < p.nq) {
      T* out = static_cast<T*>(p.out) + b * p.out_stride[0] + h * p.out_stride[1] +
               static_cast<int64_t>(i) * p.out_stride[2];
#pragma unroll
      for (int c = 0; c < kOutPerLane; ++c) {
        const int col = lane + C::kLanes * c;
        if (col < p.dv) out[col * p.out_stride[3]] = from_float<T>(o[c]);
      }
    }
  }

  if (i < p.nq) {
    T* probs = static_cast<T*>(p.probs) + b * p.probs_stride[0] + static_cast<int64_t>(i) * p.probs_stride[1];
    for (int j = lane; j < p.nk; j += C::kLanes) probs[j * p.probs_stride[2]] = from_float<T>(acc_row[j]);
  }
}

}  // namespace fasttrack
