// Launcher of box_branch_fwd_kernel (box_branch_kernel.cuh): the fused DeTrack box branch of one
// denoising block, batched over targets. Run on an H200 once (2026-12-04): matches the reference.
//
// Binding (bindings.cpp), with the declaration below added to ops.h:
//   m.def("box_branch_fwd", &fasttrack::box_branch_fwd, "Fused DeTrack box branch (one block).",
//         py::arg("b"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("work"),
//         py::arg("weights"), py::arg("B"), py::arg("Nq"), py::arg("Ns"), py::arg("C"),
//         py::arg("H"), py::arg("hidden"), py::arg("noise_hidden"), py::arg("b_stride"),
//         py::arg("k_stride"), py::arg("v_stride"), py::arg("out_stride"), py::arg("eps1"),
//         py::arg("eps2"), py::arg("dtype"), py::arg("device"), py::arg("stream"));
//   m.def("box_branch_workspace", &fasttrack::box_branch_workspace_floats,
//         "fp32 workspace floats per target of box_branch_fwd.", py::arg("Nq"), py::arg("C"),
//         py::arg("hidden"), py::arg("noise_hidden"));
//
// Arguments: device pointers b (B,Nq,C), k, v (B,H,Ns,D), out (B,Nq,C) (input dtype; b and out
// with unit channel stride), work (B, box_branch_workspace floats) fp32 contiguous, weights: the
// 16 pointers in the order ln1.w, ln1.b, q.w, q.b, proj.w, proj.b, ln2.w, ln2.b, fc1.w, fc1.b,
// fc2.w, fc2.b, noise1.w, noise1.b, noise2.w, noise2.b (contiguous, input dtype). Strides in
// elements. dtype: 0 float32, 1 float16, 2 bfloat16. The launch is asynchronous on `stream`.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "box_branch_kernel.cuh"
#include "check.h"
#include "launch.h"
#include "params.h"
#include "static_switch.h"

namespace fasttrack {

int64_t box_branch_workspace_floats(int64_t nq, int64_t dim, int64_t hidden, int64_t noise_hidden) {
  return box_branch_workspace(nq, dim, hidden, noise_hidden);
}

void box_branch_fwd(uintptr_t b, uintptr_t k, uintptr_t v, uintptr_t out, uintptr_t work,
                    const std::vector<uintptr_t>& weights, int64_t batch, int64_t nq, int64_t ns,
                    int64_t dim, int64_t heads, int64_t hidden, int64_t noise_hidden,
                    const std::vector<int64_t>& b_stride, const std::vector<int64_t>& k_stride,
                    const std::vector<int64_t>& v_stride, const std::vector<int64_t>& out_stride,
                    double eps1, double eps2, int dtype, int device, uintptr_t stream) {
  FT_CHECK_RANGE("B", batch, int64_t{0}, int64_t{2147483647});
  FT_CHECK_RANGE("Nq", nq, int64_t{1}, int64_t{BoxBranchConfig::kMaxQ});
  FT_CHECK_RANGE("Ns", ns, int64_t{1}, int64_t{1} << 16);
  FT_CHECK_RANGE("C", dim, int64_t{1}, int64_t{1} << 14);
  FT_CHECK_RANGE("H", heads, int64_t{1}, dim);
  FT_CHECK(dim % heads == 0, "argument 'C' = ", dim, " is not divisible by 'H' = ", heads);
  FT_CHECK_RANGE("hidden", hidden, int64_t{1}, int64_t{1} << 16);
  FT_CHECK_RANGE("noise_hidden", noise_hidden, int64_t{1}, int64_t{1} << 16);
  FT_CHECK(dtype >= 0 && dtype <= 2, "argument 'dtype' = ", dtype,
           " is not a dtype code (0 float32, 1 float16, 2 bfloat16)");
  FT_CHECK(eps1 > 0.0 && eps2 > 0.0, "arguments 'eps1', 'eps2' must be positive");
  FT_CHECK(weights.size() == 16, "argument 'weights' must hold 16 pointers, got ", weights.size());
  FT_CHECK_STRIDES("b_stride", b_stride, 3);
  FT_CHECK_STRIDES("k_stride", k_stride, 4);
  FT_CHECK_STRIDES("v_stride", v_stride, 4);
  FT_CHECK_STRIDES("out_stride", out_stride, 3);
  FT_CHECK(strides_nonnegative(b_stride) && strides_nonnegative(k_stride) &&
               strides_nonnegative(v_stride) && strides_nonnegative(out_stride),
           "negative strides are not supported (b_stride, k_stride, v_stride, out_stride)");
  FT_CHECK(b_stride[2] == 1 && out_stride[2] == 1,
           "arguments 'b_stride', 'out_stride' must have unit channel stride");
  if (batch == 0) return;
  FT_CHECK_PTR("b", b);
  FT_CHECK_PTR("k", k);
  FT_CHECK_PTR("v", v);
  FT_CHECK_PTR("out", out);
  FT_CHECK_PTR("work", work);
  for (size_t i = 0; i < weights.size(); ++i) FT_CHECK(weights[i] != 0, "weights[", i, "] is null");

  BoxBranchParams p{};
  p.b = reinterpret_cast<const void*>(b);
  p.k = reinterpret_cast<const void*>(k);
  p.v = reinterpret_cast<const void*>(v);
  p.out = reinterpret_cast<void*>(out);
  p.work = reinterpret_cast<float*>(work);
  const void** w[16] = {&p.ln1_w, &p.ln1_b, &p.wq, &p.bq, &p.wo, &p.bo, &p.ln2_w, &p.ln2_b,
                        &p.w1, &p.c1, &p.w2, &p.c2, &p.wn1, &p.n1, &p.wn2, &p.n2};
  for (int i = 0; i < 16; ++i) *w[i] = reinterpret_cast<const void*>(weights[i]);
  p.batch = static_cast<int>(batch);
  p.nq = static_cast<int>(nq);
  p.ns = static_cast<int>(ns);
  p.dim = static_cast<int>(dim);
  p.heads = static_cast<int>(heads);
  p.head_dim = static_cast<int>(dim / heads);
  p.hidden = static_cast<int>(hidden);
  p.noise_hidden = static_cast<int>(noise_hidden);
  copy_strides(p.b_stride, b_stride);
  copy_strides(p.k_stride, k_stride);
  copy_strides(p.v_stride, v_stride);
  copy_strides(p.out_stride, out_stride);
  p.work_stride = box_branch_workspace(nq, dim, hidden, noise_hidden);
  p.eps1 = static_cast<float>(eps1);
  p.eps2 = static_cast<float>(eps2);
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.head_dim)));

  const int64_t kmax = std::max(dim, std::max(hidden, noise_hidden));
  const size_t smem = static_cast<size_t>(nq * (kmax + ns)) * sizeof(float);
  DeviceGuard guard(device);
  DTYPE_SWITCH(static_cast<DType>(dtype), T, [&] {
    set_smem(box_branch_fwd_kernel<T>, smem, device, "box_branch_fwd (Nq * (max(C, hidden) + Ns))");
    box_branch_fwd_kernel<T><<<static_cast<unsigned>(batch), BoxBranchConfig::kThreads, smem,
                               as_stream(stream)>>>(p);
    check_launch("box_branch_fwd_kernel");
  });
}

}  // namespace fasttrack
