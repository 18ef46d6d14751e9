// Host entry points bound by bindings.cpp. Tensors arrive as raw device pointers (uintptr_t
// from torch.Tensor.data_ptr()), sizes, strides in elements, a dtype code (params.h DType), the
// device index and the stream handle (torch.cuda.Stream.cuda_stream). Launches are asynchronous
// on that stream; outputs are allocated by the caller.
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace fasttrack {

using Strides = std::vector<int64_t>;

// lse (B,H,Nq) float32 = log sum_j exp(s q.k_j).
void lse_fwd(uintptr_t q, uintptr_t k, uintptr_t lse, int64_t batch, int64_t heads, int64_t nq,
             int64_t nk, int64_t d, const Strides& q_stride, const Strides& k_stride,
             const Strides& lse_stride, double scale, int dtype, int device, uintptr_t stream);

// out (B,H,Nq,Dv) = softmax(s q k^T) v, lse (B,H,Nq) float32.
void attention_fwd(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse,
                   int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t d, int64_t dv,
                   const Strides& q_stride, const Strides& k_stride, const Strides& v_stride,
                   const Strides& out_stride, const Strides& lse_stride, double scale, int dtype,
                   int device, uintptr_t stream);

// out (B,Nk,T) = (1/H) sum_h P_h^T cross, P_h = exp(s q k^T - lse).
void self_cross_fwd(uintptr_t q, uintptr_t k, uintptr_t cross, uintptr_t lse, uintptr_t out,
                    int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t d, int64_t t,
                    const Strides& q_stride, const Strides& k_stride, const Strides& cross_stride,
                    const Strides& lse_stride, const Strides& out_stride, double scale, int dtype,
                    int device, uintptr_t stream);

// out (B,H,Nq,Dv), probs (B,Nq,Nk) head mean of P_h, lse (B,H,Nq) float32.
void cross_attention_fwd(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t probs,
                         uintptr_t lse, int64_t batch, int64_t heads, int64_t nq, int64_t nk,
                         int64_t d, int64_t dv, const Strides& q_stride, const Strides& k_stride,
                         const Strides& v_stride, const Strides& out_stride,
                         const Strides& probs_stride, const Strides& lse_stride, double scale,
                         int dtype, int device, uintptr_t stream);

// DeTrack's fused box branch of one denoising block, batched over targets (box_branch.cu has
// the argument layout); work is an fp32 scratch of box_branch_workspace_floats per target.
void box_branch_fwd(uintptr_t b, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t work,
                    const std::vector<uintptr_t>& weights, int64_t batch, int64_t nq, int64_t ns,
                    int64_t dim, int64_t heads, int64_t hidden, int64_t noise_hidden,
                    const Strides& b_stride, const Strides& k_stride, const Strides& v_stride,
                    const Strides& out_stride, double eps1, double eps2, int dtype, int device,
                    uintptr_t stream);
int64_t box_branch_workspace_floats(int64_t nq, int64_t dim, int64_t hidden, int64_t noise_hidden);

// Largest Nk cross_attention_fwd takes on `device` for these head dims (shared-memory bound).
int64_t cross_attention_max_nk(int64_t d, int64_t dv, int device);

// (number of visible CUDA devices, "" or the CUDA runtime's error text): never throws, so that
// fasttrack._ext can report why the extension is unusable.
std::tuple<int, std::string> cuda_status();

// CUDA runtime version and target architectures this build was compiled for.
std::string build_info();

}  // namespace fasttrack
