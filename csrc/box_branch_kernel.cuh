// Fused DeTrack box branch, CUDA forward (device code). Run on a GPU once: H200 (sm_90),
// 2026-12-04, tests/test_box_branch_kernel.py::test_cuda_extension_matches_reference passed and
// compute-sanitizer found no error; not run on sm_80 (see kernels/box_branch.py and
// fasttrack/trackers/detrack/box_branch.py for the math).
//
// Per target t, with Nq box tokens b (Nq, C), the search keys/values K, V (H, Ns, D), C = H * D:
//   b'  = b + Wo Attn(Wq LN1(b) + bq, K, V) + bo
//   b'' = b' + W2 GELU(W1 LN2(b') + c1) + c2
//   out = b'' - (Wn2 ReLU(Wn1 b'' + n1) + n2)
//
// One thread block per target (grid = B), kThreads = 256 threads (8 warps). Every stage is a
// product of Nq <= kMaxQ rows with a weight matrix much wider than the rows, so it streams the
// weights: warp w owns output columns n = w, w + 8, ...; its 32 lanes read consecutive elements
// of weight row n (coalesced) and each weight value is used for all Nq rows from a register, then
// a warp shuffle reduces the Nq partial sums. The stage input rows sit in shared memory (fp32,
// layer-normalized in place where a LayerNorm precedes the matmul, so LN is fused into the load
// of the next matmul's input); stage outputs go to a per-target fp32 global workspace, which
// the next stage copies back into shared memory after __syncthreads (which also makes the
// block's global writes visible to all its threads).
// Attention per head: scores for all Ns keys in shared memory (Nq x Ns fp32), one warp per row
// for the softmax, then thread (r, d) accumulates sum_j p[r, j] V[j, d] (consecutive threads
// read consecutive d: coalesced for unit d stride).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"

namespace fasttrack {

struct BoxBranchParams {
  const void* b;    // (B, Nq, C) input dtype, strides b_stride
  const void* k;    // (B, H, Ns, D) strides k_stride
  const void* v;    // (B, H, Ns, D) strides v_stride
  void* out;        // (B, Nq, C) strides out_stride
  float* work;      // (B, work_stride) fp32 workspace, see box_branch_workspace()
  // nn.Linear layout (out, in), contiguous, input dtype; LayerNorm weights (C,).
  const void* ln1_w; const void* ln1_b; const void* wq; const void* bq;
  const void* wo; const void* bo; const void* ln2_w; const void* ln2_b;
  const void* w1; const void* c1; const void* w2; const void* c2;
  const void* wn1; const void* n1; const void* wn2; const void* n2;
  int batch, nq, ns, dim, heads, head_dim, hidden, noise_hidden;
  int64_t b_stride[3];
  int64_t k_stride[4];
  int64_t v_stride[4];
  int64_t out_stride[3];
  int64_t work_stride;
  float eps1, eps2, scale;
};

struct BoxBranchConfig {
  static constexpr int kThreads = 256;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kMaxQ = 8;  // box tokens per target handled in registers
};

// Workspace floats per target: q | attn | b' | b'' (Nq x C each) | FFN hidden | NoisePred hidden.
inline int64_t box_branch_workspace(int64_t nq, int64_t dim, int64_t hidden, int64_t noise_hidden) {
  return nq * (4 * dim + hidden + noise_hidden);
}

namespace box_branch_detail {

enum class Epi { kNone, kGelu, kRelu, kAddResidual, kSubtractFrom };

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}

// In-place LayerNorm of the nq rows of xs (row stride ld, width n), one warp per row, two
// passes (mean, then centred squares) so a large mean does not cancel the variance.
template <typename T>
__device__ void layer_norm_rows(float* xs, int ld, int nq, int n, const T* gamma, const T* beta,
                                float eps) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int r = warp; r < nq; r += BoxBranchConfig::kWarps) {
    float* x = xs + r * ld;
    float s = 0.f;
    for (int c = lane; c < n; c += 32) s += x[c];
    const float mean = warp_sum(s) / n;
    float s2 = 0.f;
    for (int c = lane; c < n; c += 32) {
      const float d = x[c] - mean;
      s2 += d * d;
    }
    const float rstd = rsqrtf(warp_sum(s2) / n + eps);
    for (int c = lane; c < n; c += 32) {
      x[c] = (x[c] - mean) * rstd * to_float(gamma[c]) + to_float(beta[c]);
    }
  }
}

// xs[r, c] = src[r * row_stride + c] for r < nq, c < n (src of type S: input dtype or fp32).
template <typename S>
__device__ void load_rows(float* xs, int ld, const S* src, int64_t row_stride, int nq, int n) {
  for (int i = threadIdx.x; i < nq * n; i += BoxBranchConfig::kThreads) {
    const int r = i / n, c = i % n;
    xs[r * ld + c] = to_float(src[r * row_stride + c]);
  }
}

// dst[r, n] = epi(sum_k xs[r, k] W[n, k] + bias[n]) for r < nq, n < N (see file comment).
// kAddResidual adds res[r * res_ld + n]; kSubtractFrom stores res[r * res_ld + n] - value.
template <typename T, typename D, Epi kEpi>
__device__ void rows_linear(const float* xs, int ld, int nq, int K, const T* W, const T* bias,
                            int N, D* dst, int64_t dst_ld, const float* res, int64_t res_ld,
                            float out_scale) {
  constexpr int kMaxQ = BoxBranchConfig::kMaxQ;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int n = warp; n < N; n += BoxBranchConfig::kWarps) {
    float acc[kMaxQ];
#pragma unroll
    for (int r = 0; r < kMaxQ; ++r) acc[r] = 0.f;
    const T* w = W + static_cast<int64_t>(n) * K;
    for (int k = lane; k < K; k += 32) {
      const float wk = to_float(w[k]);
#pragma unroll
      for (int r = 0; r < kMaxQ; ++r) {
        if (r < nq) acc[r] = fmaf(xs[r * ld + k], wk, acc[r]);
      }
    }
    const float bn = to_float(bias[n]);
#pragma unroll
    for (int r = 0; r < kMaxQ; ++r) {
      // Every lane takes part in the shuffle (no divergence around warp_sum).
      const float y0 = warp_sum(acc[r]);
      if (r < nq && lane == 0) {
        float y = (y0 + bn) * out_scale;
        if (kEpi == Epi::kGelu) y = 0.5f * y * (1.f + erff(y * 0.70710678118654752f));
        if (kEpi == Epi::kRelu) y = fmaxf(y, 0.f);
        if (kEpi == Epi::kAddResidual) y += res[r * res_ld + n];
        if (kEpi == Epi::kSubtractFrom) y = res[r * res_ld + n] - y;
        dst[r * dst_ld + n] = from_float<D>(y);
      }
    }
  }
}

}  // namespace box_branch_detail

// Dynamic shared memory: xs (Nq x max(C, HID, NPH)) stage input + scores (Nq x Ns).
template <typename T>
__global__ void __launch_bounds__(BoxBranchConfig::kThreads)
box_branch_fwd_kernel(const BoxBranchParams p) {
  using namespace box_branch_detail;
  extern __shared__ float smem[];
  const int nq = p.nq, C = p.dim, D = p.head_dim;
  const int kmax = max(C, max(p.hidden, p.noise_hidden));
  float* xs = smem;
  float* scores = smem + nq * kmax;
  const int64_t t = blockIdx.x;
  const T* b = static_cast<const T*>(p.b) + t * p.b_stride[0];
  const T* kbase = static_cast<const T*>(p.k) + t * p.k_stride[0];
  const T* vbase = static_cast<const T*>(p.v) + t * p.v_stride[0];
  T* out = static_cast<T*>(p.out) + t * p.out_stride[0];
  float* ws_q = p.work + t * p.work_stride;
  float* ws_attn = ws_q + nq * C;
  float* ws_b1 = ws_attn + nq * C;
  float* ws_b2 = ws_b1 + nq * C;
  float* ws_hid = ws_b2 + nq * C;
  float* ws_np = ws_hid + nq * p.hidden;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  // q = (LN1(b) Wq^T + bq) * scale, all heads at once. b rows may be strided; the launcher
  // checks unit channel strides of b and out.
  for (int i = threadIdx.x; i < nq * C; i += BoxBranchConfig::kThreads) {
    xs[(i / C) * C + i % C] = to_float(b[(i / C) * p.b_stride[1] + i % C]);
  }
  __syncthreads();
  layer_norm_rows(xs, C, nq, C, static_cast<const T*>(p.ln1_w), static_cast<const T*>(p.ln1_b),
                  p.eps1);
  __syncthreads();
  rows_linear<T, float, Epi::kNone>(xs, C, nq, C, static_cast<const T*>(p.wq),
                                    static_cast<const T*>(p.bq), C, ws_q, C, nullptr, 0, p.scale);
  __syncthreads();

  for (int h = 0; h < p.heads; ++h) {
    const T* kh = kbase + h * p.k_stride[1];
    const T* vh = vbase + h * p.v_stride[1];
    // scores[r, j] = q_h[r] . k_j, one warp per key, lanes over d.
    for (int j = warp; j < p.ns; j += BoxBranchConfig::kWarps) {
      const T* kj = kh + j * p.k_stride[2];
      float acc[BoxBranchConfig::kMaxQ];
#pragma unroll
      for (int r = 0; r < BoxBranchConfig::kMaxQ; ++r) acc[r] = 0.f;
      for (int d = lane; d < D; d += 32) {
        const float kd = to_float(kj[d * p.k_stride[3]]);
#pragma unroll
        for (int r = 0; r < BoxBranchConfig::kMaxQ; ++r) {
          if (r < nq) acc[r] = fmaf(ws_q[r * C + h * D + d], kd, acc[r]);
        }
      }
#pragma unroll
      for (int r = 0; r < BoxBranchConfig::kMaxQ; ++r) {
        const float s = warp_sum(acc[r]);
        if (r < nq && lane == 0) scores[r * p.ns + j] = s;
      }
    }
    __syncthreads();
    // Row softmax in place, one warp per row.
    for (int r = warp; r < nq; r += BoxBranchConfig::kWarps) {
      float* s = scores + r * p.ns;
      float m = -INFINITY;
      for (int j = lane; j < p.ns; j += 32) m = fmaxf(m, s[j]);
      m = warp_max(m);
      float l = 0.f;
      for (int j = lane; j < p.ns; j += 32) {
        const float e = expf(s[j] - m);
        s[j] = e;
        l += e;
      }
      const float inv = 1.f / warp_sum(l);
      for (int j = lane; j < p.ns; j += 32) s[j] *= inv;
    }
    __syncthreads();
    // attn[r, h*D + d] = sum_j p[r, j] v_j[d].
    for (int i = threadIdx.x; i < nq * D; i += BoxBranchConfig::kThreads) {
      const int r = i / D, d = i % D;
      const float* pr = scores + r * p.ns;
      float acc = 0.f;
      for (int j = 0; j < p.ns; ++j) acc = fmaf(pr[j], to_float(vh[j * p.v_stride[2] + d * p.v_stride[3]]), acc);
      ws_attn[r * C + h * D + d] = acc;
    }
    __syncthreads();
  }

  // b' = b + attn Wo^T + bo (the residual b is reloaded as fp32 into ws_b1 first).
  load_rows(xs, C, ws_attn, C, nq, C);
  for (int i = threadIdx.x; i < nq * C; i += BoxBranchConfig::kThreads) {
    ws_b1[i] = to_float(b[(i / C) * p.b_stride[1] + i % C]);
  }
  __syncthreads();
  rows_linear<T, float, Epi::kAddResidual>(xs, C, nq, C, static_cast<const T*>(p.wo),
                                           static_cast<const T*>(p.bo), C, ws_b1, C, ws_b1, C, 1.f);
  __syncthreads();
  // hidden = GELU(LN2(b') W1^T + c1)
  load_rows(xs, C, ws_b1, C, nq, C);
  __syncthreads();
  layer_norm_rows(xs, C, nq, C, static_cast<const T*>(p.ln2_w), static_cast<const T*>(p.ln2_b),
                  p.eps2);
  __syncthreads();
  rows_linear<T, float, Epi::kGelu>(xs, C, nq, C, static_cast<const T*>(p.w1),
                                    static_cast<const T*>(p.c1), p.hidden, ws_hid, p.hidden,
                                    nullptr, 0, 1.f);
  __syncthreads();
  // b'' = b' + hidden W2^T + c2
  load_rows(xs, p.hidden, ws_hid, p.hidden, nq, p.hidden);
  __syncthreads();
  rows_linear<T, float, Epi::kAddResidual>(xs, p.hidden, nq, p.hidden, static_cast<const T*>(p.w2),
                                           static_cast<const T*>(p.c2), C, ws_b2, C, ws_b1, C, 1.f);
  __syncthreads();
  // NoisePred hidden = ReLU(b'' Wn1^T + n1)
  load_rows(xs, C, ws_b2, C, nq, C);
  __syncthreads();
  rows_linear<T, float, Epi::kRelu>(xs, C, nq, C, static_cast<const T*>(p.wn1),
                                    static_cast<const T*>(p.n1), p.noise_hidden, ws_np,
                                    p.noise_hidden, nullptr, 0, 1.f);
  __syncthreads();
  // out = b'' - (np Wn2^T + n2)
  load_rows(xs, p.noise_hidden, ws_np, p.noise_hidden, nq, p.noise_hidden);
  __syncthreads();
  rows_linear<T, T, Epi::kSubtractFrom>(xs, p.noise_hidden, nq, p.noise_hidden,
                                        static_cast<const T*>(p.wn2), static_cast<const T*>(p.n2),
                                        C, out, p.out_stride[1], ws_b2, C, 1.f);
}

}  // namespace fasttrack
