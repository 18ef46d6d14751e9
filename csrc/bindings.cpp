// Python bindings of fasttrack._C: only the m.def lines. See ops.h for the semantics and
// fasttrack/ops/cuda_backend.py for the caller.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ops.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fasttrack CUDA forward kernels (raw pointers, sizes, strides, stream handles)";
  m.def("lse_fwd", &fasttrack::lse_fwd, "Row log-sum-exp of s q k^T into lse (B,H,Nq) float32.",
        py::arg("q"), py::arg("k"), py::arg("lse"), py::arg("B"), py::arg("H"), py::arg("Nq"),
        py::arg("Nk"), py::arg("D"), py::arg("q_stride"), py::arg("k_stride"), py::arg("lse_stride"),
        py::arg("scale"), py::arg("dtype"), py::arg("device"), py::arg("stream"));
  m.def("attention_fwd", &fasttrack::attention_fwd, "Flash attention forward: out and lse.",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("B"),
        py::arg("H"), py::arg("Nq"), py::arg("Nk"), py::arg("D"), py::arg("Dv"), py::arg("q_stride"),
        py::arg("k_stride"), py::arg("v_stride"), py::arg("out_stride"), py::arg("lse_stride"),
        py::arg("scale"), py::arg("dtype"), py::arg("device"), py::arg("stream"));
  m.def("self_cross_fwd", &fasttrack::self_cross_fwd, "(1/H) sum_h P_h^T cross into out (B,Nk,T).",
        py::arg("q"), py::arg("k"), py::arg("cross"), py::arg("lse"), py::arg("out"), py::arg("B"),
        py::arg("H"), py::arg("Nq"), py::arg("Nk"), py::arg("D"), py::arg("T"), py::arg("q_stride"),
        py::arg("k_stride"), py::arg("cross_stride"), py::arg("lse_stride"), py::arg("out_stride"),
        py::arg("scale"), py::arg("dtype"), py::arg("device"), py::arg("stream"));
  m.def("cross_attention_fwd", &fasttrack::cross_attention_fwd,
        "Attention forward with the head-mean probabilities: out, probs, lse.", py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("out"), py::arg("probs"), py::arg("lse"), py::arg("B"),
        py::arg("H"), py::arg("Nq"), py::arg("Nk"), py::arg("D"), py::arg("Dv"), py::arg("q_stride"),
        py::arg("k_stride"), py::arg("v_stride"), py::arg("out_stride"), py::arg("probs_stride"),
        py::arg("lse_stride"), py::arg("scale"), py::arg("dtype"), py::arg("device"), py::arg("stream"));
  m.def("box_branch_fwd", &fasttrack::box_branch_fwd, "Fused DeTrack box branch (one block).",
        py::arg("b"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("work"), py::arg("weights"),
        py::arg("B"), py::arg("Nq"), py::arg("Ns"), py::arg("C"), py::arg("H"), py::arg("hidden"),
        py::arg("noise_hidden"), py::arg("b_stride"), py::arg("k_stride"), py::arg("v_stride"),
        py::arg("out_stride"), py::arg("eps1"), py::arg("eps2"), py::arg("dtype"), py::arg("device"),
        py::arg("stream"));
  m.def("box_branch_workspace", &fasttrack::box_branch_workspace_floats,
        "fp32 workspace floats per target of box_branch_fwd.", py::arg("Nq"), py::arg("C"),
        py::arg("hidden"), py::arg("noise_hidden"));
  m.def("cross_attention_max_nk", &fasttrack::cross_attention_max_nk,
        "Largest Nk cross_attention_fwd accepts on a device for head dims D, Dv.", py::arg("D"),
        py::arg("Dv"), py::arg("device"));
  m.def("cuda_status", &fasttrack::cuda_status, "(device count, error text or '').");
  m.def("build_info", &fasttrack::build_info, "CUDA runtime/driver versions and target archs.");
}
