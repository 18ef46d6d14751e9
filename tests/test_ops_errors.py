"""Bad inputs raise ValueError/TypeError naming the argument; dispatch explains refusals."""
import logging

import pytest
import torch

from fasttrack import ops
from fasttrack.ops import checks, dispatch


def _good(B=1, H=2, N=5, D=8, T=3, dtype=torch.float32):
    return (torch.randn(B, H, N, D, dtype=dtype), torch.randn(B, H, N, D, dtype=dtype),
            torch.randn(B, H, N, D, dtype=dtype), torch.rand(B, N, T, dtype=dtype))


def test_good_inputs_pass():
    q, k, v, c = _good()
    ops.attention(q, k, v, backend="torch")
    ops.self_cross(q, k, c, backend="torch")
    ops.harmonize(q, k, c, backend="torch")
    ops.cross_attention(q, k, v, backend="torch")


@pytest.mark.parametrize("call,exc,match", [
    (lambda q, k, v, c: ops.attention(q[0], k, v), ValueError, "q must have rank 4"),
    (lambda q, k, v, c: ops.attention(q, k[..., :4], v), ValueError, "head dim D mismatch: q has 8, k has 4"),
    (lambda q, k, v, c: ops.attention(q, k[:, :1], v), ValueError, "head count H"),
    (lambda q, k, v, c: ops.attention(q, k, v[:, :, :3]), ValueError, "key count Nk mismatch: k has 5, v has 3"),
    (lambda q, k, v, c: ops.attention(torch.cat([q, q]), k, v), ValueError, "batch size B"),
    (lambda q, k, v, c: ops.attention(q.half(), k, v), TypeError, "dtype mismatch: q is torch.float16, k is"),
    (lambda q, k, v, c: ops.attention(q.int(), k, v), TypeError, "q must be one of float16, bfloat16, float32, float64, got torch.int32"),
    (lambda q, k, v, c: ops.attention(q.numpy(), k, v), TypeError, "q must be a torch.Tensor"),
    (lambda q, k, v, c: ops.attention(q, k.to("meta"), v), ValueError, "mixed devices: q is on cpu, k is on meta"),
    (lambda q, k, v, c: ops.attention(q[:, :, :0], k, v), ValueError, "q has an empty dimension"),
    (lambda q, k, v, c: ops.attention(q, k, v, scale="x"), TypeError, "scale must be a float"),
    (lambda q, k, v, c: ops.attention(q, k, v, scale=float("nan")), ValueError, "scale must be finite"),
    (lambda q, k, v, c: ops.self_cross(q, k, c[0]), ValueError, "cross must have rank 3"),
    (lambda q, k, v, c: ops.self_cross(q, k, c[:, :4]), ValueError, "query count Nq mismatch: q has 5, cross has 4"),
    (lambda q, k, v, c: ops.self_cross(q, k, c.double()), TypeError, "dtype mismatch: q is torch.float32, cross"),
    (lambda q, k, v, c: ops.self_cross(q, k, c[:, :, :0]), ValueError, "cross has an empty dimension"),
    (lambda q, k, v, c: ops.self_cross(q, k, c, lse=torch.zeros(1, 2, 4)), ValueError, "lse must have shape"),
    (lambda q, k, v, c: ops.self_cross(q, k, c, lse=torch.zeros(1, 2, 5).half()), TypeError, "lse must be float32"),
    (lambda q, k, v, c: ops.self_cross(q, k, c, lse=[0.0]), TypeError, "lse must be a torch.Tensor"),
    (lambda q, k, v, c: ops.harmonize(q, k, c, alpha=1.5), ValueError, r"alpha must be in \[0, 1\]"),
    (lambda q, k, v, c: ops.harmonize(q, k, c, alpha=-0.1), ValueError, r"alpha must be in \[0, 1\]"),
    (lambda q, k, v, c: ops.harmonize(q, k, c, alpha=None), TypeError, "alpha must be a float"),
    (lambda q, k, v, c: ops.harmonize(q, k[:, :, :4], c), ValueError, "sequence length N"),
    (lambda q, k, v, c: ops.cross_attention(q, k, v[..., :0]), ValueError, "v has an empty dimension"),
    (lambda q, k, v, c: ops.attention(q, k, v, backend="cudnn"), ValueError, "backend must be one of"),
])
def test_bad_inputs(call, exc, match):
    q, k, v, c = _good()
    with pytest.raises(exc, match=match):
        call(q, k, v, c)


def test_forced_backend_lists_reasons():
    q, k, v, _ = _good(dtype=torch.float64)
    # float64 on CPU: CUDA refuses (not CUDA tensors / no extension), Triton refuses float64.
    with pytest.raises(dispatch.BackendUnavailable) as e:
        ops.attention(q, k, v, backend="cuda")
    assert "cuda:" in str(e.value)
    with pytest.raises(dispatch.BackendUnavailable, match="float64"):
        ops.attention(q, k, v, backend="triton")


def test_auto_falls_back_and_logs(caplog):
    q, k, v, cross = _good(dtype=torch.float64)
    with caplog.at_level(logging.DEBUG, logger="fasttrack.dispatch"):
        out, _ = ops.attention(q, k, v)
        sc = ops.self_cross(q, k, cross)
    # attention on the CPU: PyTorch's CPU flash kernel (aten); self_cross: aten refuses it.
    assert "attention: auto chose backend aten" in caplog.text
    assert "self_cross: auto chose backend torch" in caplog.text
    assert out.dtype == torch.float64 and sc.dtype == torch.float64


def test_cuda_is_never_auto_until_verified():
    q, k, v, _ = _good()
    r = dispatch.reasons("cuda", "attention", q, k, v, auto=True)
    if "attention" not in dispatch.VERIFIED_CUDA_OPS:
        assert any("has not passed the GPU tests" in x for x in r)


def test_env_forces_backend(monkeypatch):
    q, k, v, _ = _good(dtype=torch.float64)
    monkeypatch.setenv("FASTTRACK_BACKEND", "triton")
    with pytest.raises(dispatch.BackendUnavailable, match="triton"):
        ops.attention(q, k, v)
    monkeypatch.setenv("FASTTRACK_BACKEND", "torch")
    ops.attention(q, k, v)
    monkeypatch.setenv("FASTTRACK_BACKEND", "bogus")
    with pytest.raises(ValueError, match="FASTTRACK_BACKEND"):
        ops.attention(q, k, v)


def test_available_reports_every_backend():
    q, k, v, _ = _good()
    av = ops.available("attention", q, k, v)
    assert set(av) == {"aten", "cuda", "triton", "torch"} and av["torch"] == [] and av["aten"] == []
    assert any("attention and lse only" in r for r in ops.available("self_cross", q, k, _good()[3])["aten"])


def test_auto_never_picks_the_interpreter(monkeypatch):
    """Even with TRITON_INTERPRET=1, auto sends CPU tensors to PyTorch's kernels (the aten
    backend for attention, the torch backend for the map ops)."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    q, k, v, cross = _good()
    assert dispatch.select("attention", "auto", q, k, v) == "aten"
    assert dispatch.select("self_cross", "auto", q, k, cross) == "torch"
    assert dispatch.select("cross_attention", "auto", q, k, v) == "torch"
    assert any("interpreter is for testing" in r for r in dispatch.reasons("triton", "attention", q, k, v, auto=True))


def test_dispatch_cache_checks_once_per_shape_and_errors_as_before(monkeypatch):
    """select(..., validate=) runs the checks and asks the backends once per key (op, backend,
    env, each tensor's device/dtype/shape); a new shape, dtype or env value misses, and every
    refusal raises the uncached error, each time."""
    calls = []

    def validate(*ts):
        calls.append(len(ts))
        checks.validate_attention(*ts)
    q, k, v, _ = _good()
    for _ in range(3):
        assert dispatch.select("attention", "torch", q, k, v, validate=validate) == "torch"
    assert calls == [3]
    dispatch.select("attention", "torch", q[:, :, :4], k, v, validate=validate)  # new shape
    dispatch.select("attention", "torch", q.double(), k.double(), v.double(), validate=validate)
    monkeypatch.setenv("FASTTRACK_BACKEND", "torch")
    dispatch.select("attention", "torch", q, k, v, validate=validate)
    assert calls == [3, 3, 3, 3]
    for _ in range(2):  # not cached: the same one-line error every time
        with pytest.raises(ValueError, match="head dim D mismatch"):
            dispatch.select("attention", "torch", q, k[..., :3], v, validate=validate)
        with pytest.raises(dispatch.BackendUnavailable, match="float64"):
            dispatch.select("attention", "triton", q.double(), k.double(), v.double())
    with pytest.raises(TypeError, match="backend must be a string"):
        dispatch.select("attention", ["torch"], q, k, v)
    # a non-tensor, unhashable argument is decided without the cache
    assert dispatch.select("attention", "torch", q, k, v, [1]) == "torch"


def test_dispatch_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(dispatch, "_CACHE_MAX", 5)
    for n in range(1, 12):
        x = torch.randn(1, 1, n, 4)
        dispatch.select("attention", "torch", x, x, x)
        assert len(dispatch._CACHE) <= 5
