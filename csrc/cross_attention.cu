// Launcher of cross_attention_fwd_kernel (cross_attention_kernel.cuh): checks, dtype and
// head-dim switches, and the shared-memory bound on Nk. Kernel parameters come from launch.h's
// attn_params.
#include <algorithm>
#include <stdexcept>

#include "cross_attention_kernel.cuh"
#include "launch.h"
#include "ops.h"
#include "static_switch.h"

namespace fasttrack {

namespace {

template <typename T, int kD>
void run_cross_attention_fwd(const AttnParams& p, int device, cudaStream_t stream) {
  using C = CrossAttentionConfig;
  const size_t smem = C::smem_bytes<kD>(p.nk);
  if (smem > static_cast<size_t>(max_smem_optin(device))) {
    throw std::invalid_argument(detail::concat(
        "fasttrack._C: argument 'Nk' = ", p.nk, " is beyond cross_attention_fwd's limit of ",
        cross_attention_max_nk(p.d, p.dv, device), " keys on this device (a score row of every key "
        "is kept in shared memory; padded head dim ", kD, ")"));
  }
  set_smem(cross_attention_fwd_kernel<T, kD>, smem, device, "cross_attention_fwd");
  const dim3 grid((p.nq + C::kBlockM - 1) / C::kBlockM, p.batch);
  cross_attention_fwd_kernel<T, kD><<<grid, C::kThreads, smem, stream>>>(p);
  check_launch("cross_attention_fwd_kernel");
}

}  // namespace

int64_t cross_attention_max_nk(int64_t d, int64_t dv, int device) {
  FT_CHECK_RANGE("D", d, int64_t{1}, kMaxHeadDim);
  FT_CHECK_RANGE("Dv", dv, int64_t{1}, kMaxHeadDim);
  int count = 0;
  FT_CUDA_CHECK(cudaGetDeviceCount(&count));
  FT_CHECK(device >= 0 && device < count, "argument 'device' = ", device,
           " is not a CUDA device index (", count, " devices visible)");
  const size_t limit = static_cast<size_t>(max_smem_optin(device));
  using C = CrossAttentionConfig;
  return HEADDIM_SWITCH(std::max(d, dv), kD, [&] {
    // smem_bytes grows by 2 * kBlockM floats per key; step down whole key tiles from the bound.
    const size_t fixed = C::smem_bytes<kD>(0);
    const size_t per_key = 2 * C::kBlockM * sizeof(float);
    if (limit <= fixed) return int64_t{0};
    int64_t nk = static_cast<int64_t>((limit - fixed) / per_key) / C::kBlockN * C::kBlockN;
    while (nk > 0 && C::smem_bytes<kD>(static_cast<int>(nk)) > limit) nk -= C::kBlockN;
    return nk;
  });
}

void cross_attention_fwd(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t probs,
                         uintptr_t lse, int64_t batch, int64_t heads, int64_t nq, int64_t nk,
                         int64_t d, int64_t dv, const Strides& q_stride, const Strides& k_stride,
                         const Strides& v_stride, const Strides& out_stride,
                         const Strides& probs_stride, const Strides& lse_stride, double scale,
                         int dtype, int device, uintptr_t stream) {
  check_qk_sizes(batch, heads, nq, nk, d, scale, dtype);
  FT_CHECK_RANGE("H", heads, int64_t{1}, kMaxGridYZ);  // probs is a mean over the heads
  FT_CHECK_RANGE("Dv", dv, int64_t{1}, kMaxHeadDim);
  FT_CHECK_STRIDES("q_stride", q_stride, 4);
  FT_CHECK_STRIDES("k_stride", k_stride, 4);
  FT_CHECK_STRIDES("v_stride", v_stride, 4);
  FT_CHECK_STRIDES("out_stride", out_stride, 4);
  FT_CHECK_STRIDES("probs_stride", probs_stride, 3);
  FT_CHECK_STRIDES("lse_stride", lse_stride, 3);
  FT_CHECK(strides_nonnegative(q_stride) && strides_nonnegative(k_stride) &&
               strides_nonnegative(v_stride) && strides_nonnegative(out_stride) &&
               strides_nonnegative(probs_stride) && strides_nonnegative(lse_stride),
           "negative strides are not supported (q, k, v, out, probs, lse)");
  if (batch == 0 || nq == 0) return;
  FT_CHECK_PTR("q", q);
  FT_CHECK_PTR("out", out);
  FT_CHECK_PTR("lse", lse);
  if (nk > 0) {
    FT_CHECK_PTR("k", k);
    FT_CHECK_PTR("v", v);
    FT_CHECK_PTR("probs", probs);
  }

  const AttnParams p = attn_params(q, k, v, out, lse, probs, batch, heads, nq, nk, d, dv, q_stride,
                                   k_stride, v_stride, out_stride, lse_stride, probs_stride, scale, dtype);
  DeviceGuard guard(device);
  DTYPE_SWITCH(p.dtype, T, [&] {
    HEADDIM_SWITCH(std::max(p.d, p.dv), kD,
                   [&] { run_cross_attention_fwd<T, kD>(p, device, as_stream(stream)); });
  });
}

}  // namespace fasttrack
