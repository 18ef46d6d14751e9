// Launcher of lse_fwd_kernel (lse_kernel.cuh): checks, dtype and head-dim switches.
#include "launch.h"
#include "lse_kernel.cuh"
#include "ops.h"
#include "static_switch.h"

namespace fasttrack {

namespace {

template <typename T, int kD>
void run_lse_fwd(const AttnParams& p, int device, cudaStream_t stream) {
  using C = LseConfig;
  const size_t smem = C::smem_bytes<kD>();
  set_smem(lse_fwd_kernel<T, kD>, smem, device, "lse_fwd");
  const dim3 grid((p.nq + C::kBlockM - 1) / C::kBlockM, p.heads, p.batch);
  lse_fwd_kernel<T, kD><<<grid, C::kThreads, smem, stream>>>(p);
  check_launch("lse_fwd_kernel");
}

}  // namespace

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

  AttnParams p{};
  p.q = reinterpret_cast<const void*>(q);
  p.k = reinterpret_cast<const void*>(k);
  p.lse = reinterpret_cast<float*>(lse);
  p.batch = static_cast<int>(batch);
  p.heads = static_cast<int>(heads);
  p.nq = static_cast<int>(nq);
  p.nk = static_cast<int>(nk);
  p.d = static_cast<int>(d);
  p.dv = 0;
  copy_strides(p.q_stride, q_stride);
  copy_strides(p.k_stride, k_stride);
  copy_strides(p.lse_stride, lse_stride);
  p.scale = static_cast<float>(scale);
  p.dtype = static_cast<DType>(dtype);

  DeviceGuard guard(device);
  DTYPE_SWITCH(p.dtype, T, [&] {
    HEADDIM_SWITCH(p.d, kD, [&] { run_lse_fwd<T, kD>(p, device, as_stream(stream)); });
  });
}

}  // namespace fasttrack
