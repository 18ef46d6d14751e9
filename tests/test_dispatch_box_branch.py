"""The box branch dispatches through fasttrack.ops.dispatch like every fused op, and the
backends' limits come from one declaration (fasttrack.ops.limits). CPU only: the Triton kernel
runs under TRITON_INTERPRET=1 (set here, before fasttrack.kernels is imported); CUDA tensors are
stood in for by "meta" tensors or by a monkeypatched device check where that is what the code
under test reads."""
from __future__ import annotations

import dataclasses
import logging
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fasttrack.ops import cuda_backend, dispatch, limits, torch_backend, triton_backend  # noqa: E402
from fasttrack.trackers.detrack.box_branch import BoxBranch  # noqa: E402
from fasttrack.trackers.detrack.fused import FusedBoxBranch  # noqa: E402

try:
    from fasttrack.kernels import box_branch as kb  # noqa: E402
except ImportError:  # no triton
    kb = None

needs_interpreter = pytest.mark.skipif(
    torch.cuda.is_available() or kb is None or not kb._kernel_is_interpreted(),
    reason="needs the Triton interpreter on a CPU-only machine")


def _module_and_inputs(dtype=torch.float64, B=2, nq=4, ns=37, dim=48, heads=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = BoxBranch(dim, heads, 2.5, 40)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (p.shape[-1] ** -0.5 if p.dim() == 2 else 0.2))
    m = m.to(dtype).eval()
    b = torch.randn(B, nq, dim, generator=g).to(dtype) + 2
    qkv = torch.randn(B, ns, 3, heads, dim // heads, generator=g).to(dtype).permute(2, 0, 3, 1, 4)
    return m, b, qkv[1], qkv[2]


def test_auto_takes_torch_on_cpu(caplog, monkeypatch):
    monkeypatch.delenv("FASTTRACK_BACKEND", raising=False)
    m, b, k, v = _module_and_inputs()
    fused = FusedBoxBranch.from_reference(m, "auto")
    with caplog.at_level(logging.DEBUG, logger="fasttrack.dispatch"):
        assert fused.resolve_backend(b, k, v) == "torch"
        with torch.no_grad():
            out = fused(b, k, v)
    assert "box_branch: auto chose backend torch" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(out, m(b, k, v), rtol=1e-12, atol=1e-12)


@needs_interpreter
def test_forced_triton_runs_the_interpreter(caplog):
    m, b, k, v = _module_and_inputs()
    fused = FusedBoxBranch.from_reference(m, "triton")
    with caplog.at_level(logging.DEBUG, logger="fasttrack.dispatch"):
        with torch.no_grad():
            out = fused(b, k, v)
    assert "box_branch: forced backend triton" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(out, m(b, k, v), rtol=1e-12, atol=1e-12)


@needs_interpreter
def test_triton_refuses_16_bit_under_the_interpreter():
    m, b, k, v = _module_and_inputs(torch.float32)
    r = dispatch.reasons("triton", "box_branch", b.half(), k.half(), v.half())
    assert any("16-bit" in x for x in r)
    with pytest.raises(dispatch.BackendUnavailable, match="triton: .*16-bit"), torch.no_grad():
        FusedBoxBranch.from_reference(m.half(), "triton")(b.half(), k.half(), v.half())


def test_forced_cuda_without_extension_lists_reasons():
    m, b, k, v = _module_and_inputs(torch.float32)
    fused = FusedBoxBranch.from_reference(m, "cuda")
    with pytest.raises(dispatch.BackendUnavailable) as e:
        with torch.no_grad():
            fused(b, k, v)
    msg = str(e.value)
    assert "no fasttrack backend can run box_branch" in msg and "cuda:" in msg
    if not cuda_backend.HAS_CUDA_EXT:
        assert "fasttrack._C is unavailable" in msg


def test_env_forces_backend(monkeypatch):
    m, b, k, v = _module_and_inputs()
    fused = FusedBoxBranch.from_reference(m, "auto")
    monkeypatch.setenv("FASTTRACK_BACKEND", "torch")
    assert fused.resolve_backend(b, k, v) == "torch"
    monkeypatch.setenv("FASTTRACK_BACKEND", "cuda")
    with pytest.raises(dispatch.BackendUnavailable, match="cuda:"):
        fused.resolve_backend(b, k, v)
    monkeypatch.setenv("FASTTRACK_BACKEND", "bogus")
    with pytest.raises(ValueError, match="FASTTRACK_BACKEND"):
        fused.resolve_backend(b, k, v)
    # An explicit backend on the module is not overridden by the environment.
    monkeypatch.setenv("FASTTRACK_BACKEND", "cuda")
    assert FusedBoxBranch.from_reference(m, "torch").resolve_backend(b, k, v) == "torch"


def test_backend_names_come_from_dispatch():
    m, *_ = _module_and_inputs()
    for name in ("auto",) + dispatch.BACKENDS:
        assert FusedBoxBranch.from_reference(m, name).backend == name
    with pytest.raises(ValueError, match="backend must be one of"):
        FusedBoxBranch.from_reference(m, "cudnn")


def test_triton_box_branch_is_excluded_from_auto_with_a_reason(monkeypatch):
    """On CUDA tensors (stood in for by 'meta' tensors, with the device checks of the Triton
    backend told that meta is fine) every reason but the auto exclusion is gone, so the
    exclusion is what keeps "auto" on torch."""
    m, b, k, v = _module_and_inputs(torch.float32)
    b, k, v = (t.to("meta") for t in (b, k, v))
    assert "box_branch" in dispatch.TRITON_AUTO_EXCLUDED
    monkeypatch.setattr(triton_backend, "_box_branch_reasons", lambda named: [])
    assert dispatch.reasons("triton", "box_branch", b, k, v) == []
    r = dispatch.reasons("triton", "box_branch", b, k, v, auto=True)
    assert r == [dispatch.TRITON_AUTO_EXCLUDED["box_branch"]]
    assert "slower than PyTorch" in r[0] and "backend='triton'" in r[0]
    assert dispatch.select("box_branch", "auto", b, k, v) == "torch"
    assert dispatch.select("box_branch", "triton", b, k, v) == "triton"


def test_interpreter_refuses_cuda_tensors(monkeypatch):
    """TRITON_INTERPRET=1 with CUDA tensors: the triton backend refuses. No CUDA tensor can be
    made here, so the check is called on a stand-in with a CUDA device (all it reads), and
    every op family's reasons are shown to include that check."""

    class _CudaTensor:
        device = torch.device("cuda", 0)

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_backend._interpreter_reasons([_CudaTensor()]) == [triton_backend.INTERPRET_ON_CUDA]
    assert "cannot run CUDA tensors; unset it on a GPU machine" in triton_backend.INTERPRET_ON_CUDA
    assert triton_backend._interpreter_reasons([torch.zeros(1)]) == []
    monkeypatch.delenv("TRITON_INTERPRET")
    if not triton_backend._kernels_imported_interpreted():
        assert triton_backend._interpreter_reasons([_CudaTensor()]) == []

    monkeypatch.setattr(triton_backend, "_interpreter_reasons", lambda ts: ["SENTINEL"])
    q = torch.zeros(1, 2, 5, 8)
    m, b, k, v = _module_and_inputs()
    assert "SENTINEL" in dispatch.reasons("triton", "attention", q, q, q)
    assert "SENTINEL" in dispatch.reasons("triton", "self_cross", q, q, torch.zeros(1, 5, 3))
    assert "SENTINEL" in dispatch.reasons("triton", "box_branch", b, k, v)


def test_limits_are_declared_once():
    from fasttrack.kernels import _common

    assert _common.MAX_HEAD_DIM is limits.MAX_HEAD_DIM == limits.TRITON.max_head_dim == 128
    assert _common.MAX_TOKENS is limits.MAX_TOKENS == limits.TRITON.max_tokens == 256
    assert _common.SUPPORTED_DTYPES is limits.TRITON.dtypes
    assert set(cuda_backend._DTYPE_CODES) == set(limits.CUDA.dtypes)
    assert triton_backend.LIMITS is limits.TRITON and cuda_backend.LIMITS is limits.CUDA
    if kb is not None:
        assert kb.WEIGHT_NAMES is limits.BOX_BRANCH_WEIGHTS
    assert limits.TRITON.dtypes_for("box_branch") == (torch.float16, torch.bfloat16,
                                                      torch.float32, torch.float64)


@pytest.mark.parametrize("lim", [limits.TRITON, limits.CUDA])
def test_shared_reasons_reject_head_dim_and_tokens(lim):
    q = torch.zeros(1, 2, 5, 129, device="meta")
    cross = torch.zeros(1, 5, 257, device="meta")
    r = lim.reasons("self_cross", [q, cross], head_dims={"head dim D": 129}, tokens=257,
                    devices=("meta",))
    assert r == ["head dim D=129 > 128", "cross has T=257 tokens > 256"]
    assert lim.reasons("self_cross", [q], head_dims={"head dim D": 128}, tokens=256,
                       devices=("meta",)) == []
    assert any("float64 is not supported" in x
               for x in lim.reasons("attention", [q.double()], devices=("meta",)))


@pytest.mark.skipif(kb is None, reason="needs triton")
def test_triton_backend_reads_the_shared_limits(monkeypatch):
    """The Triton backend's reasons for D = 129 and T = 257 are the shared limits' messages
    (interpreter on, CPU tensors allowed), and a changed limit moves them."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q = torch.zeros(1, 2, 5, 129)
    cross = torch.zeros(1, 5, 257)
    r = triton_backend.reasons("self_cross", q, q, cross)
    assert "head dim D=129 > 128" in r and "cross has T=257 tokens > 256" in r
    q128, cross256 = torch.zeros(1, 2, 5, 128), torch.zeros(1, 5, 256)
    assert triton_backend.reasons("self_cross", q128, q128, cross256) == []
    monkeypatch.setattr(triton_backend, "LIMITS", dataclasses.replace(limits.TRITON, max_head_dim=64))
    assert "head dim D=128 > 64" in triton_backend.reasons("self_cross", q128, q128, cross256)


def test_cuda_backend_reads_the_shared_limits(monkeypatch):
    """With the extension present (monkeypatched), the CUDA backend's reasons on D = 129,
    T = 257 are the same shared messages as Triton's."""
    monkeypatch.setattr(cuda_backend, "HAS_CUDA_EXT", True)
    monkeypatch.setattr(cuda_backend, "LIMITS", dataclasses.replace(limits.CUDA, devices=("cpu",)))
    q = torch.zeros(1, 2, 5, 129)
    cross = torch.zeros(1, 5, 257)
    r = cuda_backend.reasons("self_cross", q, q, cross)
    assert "head dim D=129 > 128" in r and "cross has T=257 tokens > 256" in r
    r64 = cuda_backend.reasons("attention", q.double(), q.double(), q.double())
    assert any("float64 is not supported" in x for x in r64)


def test_cuda_box_branch_reasons(monkeypatch):
    m, b, k, v = _module_and_inputs(torch.float64)
    r = dispatch.reasons("cuda", "box_branch", b, k, v)
    assert r and all(isinstance(x, str) for x in r)

    class _Ext:
        box_branch_fwd = None

    monkeypatch.setattr(cuda_backend, "HAS_CUDA_EXT", True)
    monkeypatch.setattr(cuda_backend, "CUDA_EXT", _Ext)
    r = dispatch.reasons("cuda", "box_branch", b, k, v)
    assert any("need CUDA tensors" in x for x in r)
    assert any("float64 is not supported" in x for x in r)
    monkeypatch.setattr(cuda_backend, "CUDA_EXT", object())
    assert dispatch.reasons("cuda", "box_branch", b, k, v) == [
        "fasttrack._C was built without box_branch_fwd (csrc/box_branch.cu)"]


def test_torch_primitive_matches_reference():
    m, b, k, v = _module_and_inputs()
    w = [m.get_parameter(n) for n in limits.BOX_BRANCH_WEIGHTS]
    with torch.no_grad():
        out = torch_backend.box_branch_fwd(b, k, v, w, (m.norm1.eps, m.norm2.eps))
        torch.testing.assert_close(out, m(b, k, v), rtol=1e-12, atol=1e-12)
