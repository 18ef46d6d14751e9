// Launchers of attention_fwd_kernel (attention_kernel.cuh) for both of its ops: attention_fwd
// (kHasV = true) and lse_fwd (kHasV = false, the same kernel without V): checks, dtype and
// head-dim switches. Kernel parameters come from launch.h's attn_params.
#include <algorithm>

#include "attention_kernel.cuh"
#include "launch.h"
#include "ops.h"
#include "static_switch.h"

namespace fasttrack {

namespace {

template <typename T, int kD, bool kHasV>
void run_attention_fwd(const AttnParams& p, int device, cudaStream_t stream) {
  using C = AttentionConfig<kHasV>;
  const size_t smem = C::template smem_bytes<kD>();
  const char* name = kHasV ? "attention_fwd" : "lse_fwd";
  set_smem(attention_fwd_kernel<T, kD, kHasV>, smem, device, name);
  const dim3 grid((p.nq + C::kBlockM - 1) / C::kBlockM, p.heads, p.batch);
  attention_fwd_kernel<T, kD, kHasV><<<grid, C::kThreads, smem, stream>>>(p);
  check_launch(kHasV ? "attention_fwd_kernel" : "attention_fwd_kernel (lse only)");
}

}  // namespace

void attention_fwd(uintptr_t q, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t lse,
                   int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t d, int64_t dv,
                   const Strides& q_stride, const Strides& k_stride, const Strides& v_stride,
                   const Strides& out_stride, const Strides& lse_stride, double scale, int dtype,
                   int device, uintptr_t stream) {
  check_qk_sizes(batch, heads, nq, nk, d, scale, dtype);
  FT_CHECK_RANGE("Dv", dv, int64_t{1}, kMaxHeadDim);
  FT_CHECK_STRIDES("q_stride", q_stride, 4);
  FT_CHECK_STRIDES("k_stride", k_stride, 4);
  FT_CHECK_STRIDES("v_stride", v_stride, 4);
  FT_CHECK_STRIDES("out_stride", out_stride, 4);
  FT_CHECK_STRIDES("lse_stride", lse_stride, 3);
  FT_CHECK(strides_nonnegative(q_stride) && strides_nonnegative(k_stride) &&
               strides_nonnegative(v_stride) && strides_nonnegative(out_stride) &&
               strides_nonnegative(lse_stride),
           "negative strides are not supported (q, k, v, out, lse)");
  if (batch == 0 || heads == 0 || nq == 0) return;
  FT_CHECK_PTR("q", q);
  FT_CHECK_PTR("out", out);
  FT_CHECK_PTR("lse", lse);
  if (nk > 0) {
    FT_CHECK_PTR("k", k);
    FT_CHECK_PTR("v", v);
  }

  const AttnParams p = attn_params(q, k, v, out, lse, 0, batch, heads, nq, nk, d, dv, q_stride,
                                   k_stride, v_stride, out_stride, lse_stride, {}, scale, dtype);
  DeviceGuard guard(device);
  DTYPE_SWITCH(p.dtype, T, [&] {
    HEADDIM_SWITCH(std::max(p.d, p.dv), kD,
                   [&] { run_attention_fwd<T, kD, true>(p, device, as_stream(stream)); });
  });
}

void lse_fwd(uintptr_t q, uintptr_t k, uintptr_t lse, int64_t batch, int64_t heads, int64_t nq,
             int64_t nk, int64_t d, const Strides& q_stride, const Strides& k_stride,
             const Strides& lse_stride, double scale, int dtype, int device, uintptr_t stream) {
  check_qk_sizes(batch, heads, nq, nk, d, scale, dtype);
  FT_CHECK_STRIDES("q_stride", q_stride, 4);
  FT_CHECK_STRIDES("k_stride", k_stride, 4);
  FT_CHECK_STRIDES("lse_stride", lse_stride, 3);
  FT_CHECK(strides_nonnegative(q_stride) && strides_nonnegative(k_stride) &&
               strides_nonnegative(lse_stride),
           "negative strides are not supported (q_stride, k_stride, lse_stride)");
  if (batch == 0 || heads == 0 || nq == 0) return;
  FT_CHECK_PTR("q", q);
  FT_CHECK_PTR("lse", lse);
  if (nk > 0) FT_CHECK_PTR("k", k);

  const AttnParams p = attn_params(q, k, 0, 0, lse, 0, batch, heads, nq, nk, d, 0, q_stride,
                                   k_stride, {}, {}, lse_stride, {}, scale, dtype);
  DeviceGuard guard(device);
  DTYPE_SWITCH(p.dtype, T, [&] {
    HEADDIM_SWITCH(p.d, kD, [&] { run_attention_fwd<T, kD, false>(p, device, as_stream(stream)); });
  });
}

}  // namespace fasttrack
