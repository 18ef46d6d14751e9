// Kernel parameter structs (flash-attention style): raw device pointers, sizes and strides in
// elements, so the extension links only the CUDA runtime and never sees a torch::Tensor.
// Shapes follow docs/BACKENDS.md:
//   q (B,H,Nq,D)  k (B,H,Nk,D)  v (B,H,Nk,Dv)  cross (B,Nq,T)  lse (B,H,Nq) float32
#pragma once

#include <cstdint>

namespace fasttrack {

// Dtype codes shared with fasttrack/ops/cuda_backend.py (_DTYPE_CODES); keep both in sync.
enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

// lse_fwd, attention_fwd and cross_attention_fwd. Pointers an op does not use are null
// (lse_fwd: v, out, probs; attention_fwd: probs).
struct AttnParams {
  const void* q;
  const void* k;
  const void* v;
  void* out;    // (B,H,Nq,Dv), input dtype
  float* lse;   // (B,H,Nq), natural-log row log-sum-exp
  void* probs;  // (B,Nq,Nk) head-mean probabilities, input dtype

  int batch, heads, nq, nk, d, dv;

  int64_t q_stride[4];  // b, h, n, d
  int64_t k_stride[4];
  int64_t v_stride[4];
  int64_t out_stride[4];
  int64_t lse_stride[3];    // b, h, n
  int64_t probs_stride[3];  // b, i, j

  float scale;  // s of softmax(s q k^T), already resolved by the caller
  DType dtype;
};

// self_cross_fwd: out (B,Nk,T) = (1/H) sum_h P_h^T C with P_h = exp(s q k^T - L_h).
struct SelfCrossParams {
  const void* q;
  const void* k;
  const void* cross;  // (B,Nq,T), same dtype as q
  const float* lse;   // (B,H,Nq)
  void* out;          // (B,Nk,T), same dtype as q

  int batch, heads, nq, nk, d, t;

  int64_t q_stride[4];
  int64_t k_stride[4];
  int64_t cross_stride[3];  // b, i, t
  int64_t lse_stride[3];    // b, h, i
  int64_t out_stride[3];    // b, j, t

  float scale;
  DType dtype;
};

}  // namespace fasttrack
