// Launcher of self_cross_fwd_kernel (self_cross_kernel.cuh): checks, dtype, head-dim and
// token-count switches.
#include "launch.h"
#include "ops.h"
#include "self_cross_kernel.cuh"
#include "static_switch.h"

namespace fasttrack {

namespace {

constexpr int64_t kMaxTokens = 256;

template <typename T, int kD, int kT>
void run_self_cross_fwd(const SelfCrossParams& p, int device, cudaStream_t stream) {
  using C = SelfCrossConfig;
  const size_t smem = C::smem_bytes<kD, kT>();
  set_smem(self_cross_fwd_kernel<T, kD, kT>, smem, device, "self_cross_fwd");
  const dim3 grid((p.nk + C::kBlockN - 1) / C::kBlockN, p.batch);
  self_cross_fwd_kernel<T, kD, kT><<<grid, C::kThreads, smem, stream>>>(p);
  check_launch("self_cross_fwd_kernel");
}

}  // namespace

void self_cross_fwd(uintptr_t q, uintptr_t k, uintptr_t cross, uintptr_t lse, uintptr_t out,
                    int64_t batch, int64_t heads, int64_t nq, int64_t nk, int64_t d, int64_t t,
                    const Strides& q_stride, const Strides& k_stride, const Strides& cross_stride,
                    const Strides& lse_stride, const Strides& out_stride, double scale, int dtype,
                    int device, uintptr_t stream) {
  check_qk_sizes(batch, heads, nq, nk, d, scale, dtype);
  FT_CHECK_RANGE("H", heads, int64_t{1}, kMaxGridYZ);  // the output is a mean over the heads
  FT_CHECK_RANGE("T", t, int64_t{1}, kMaxTokens);
  FT_CHECK_STRIDES("q_stride", q_stride, 4);
  FT_CHECK_STRIDES("k_stride", k_stride, 4);
  FT_CHECK_STRIDES("cross_stride", cross_stride, 3);
  FT_CHECK_STRIDES("lse_stride", lse_stride, 3);
  FT_CHECK_STRIDES("out_stride", out_stride, 3);
  FT_CHECK(strides_nonnegative(q_stride) && strides_nonnegative(k_stride) &&
               strides_nonnegative(cross_stride) && strides_nonnegative(lse_stride) &&
               strides_nonnegative(out_stride),
           "negative strides are not supported (q, k, cross, lse, out)");
  if (batch == 0 || nk == 0) return;
  FT_CHECK_PTR("k", k);
  FT_CHECK_PTR("out", out);
  if (nq > 0) {
    FT_CHECK_PTR("q", q);
    FT_CHECK_PTR("cross", cross);
    FT_CHECK_PTR("lse", lse);
  }

  const SelfCrossParams p = self_cross_params(q, k, cross, lse, out, batch, heads, nq, nk, d, t, q_stride,
                                              k_stride, cross_stride, lse_stride, out_stride, scale, dtype);
  DeviceGuard guard(device);
  DTYPE_SWITCH(p.dtype, T, [&] {
    HEADDIM_SWITCH(p.d, kD, [&] {
      TOKENS_SWITCH(p.t, kT, [&] { run_self_cross_fwd<T, kD, kT>(p, device, as_stream(stream)); });
    });
  });
}

}  // namespace fasttrack
