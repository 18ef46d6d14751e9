"""The "aten" backend (PyTorch's fused attention kernels with their lse) against float64
references, and its CUDA path's calls checked on meta tensors (PyTorch's shape functions of
the same aten ops: signatures and shapes only, no numerics; the numerics need a GPU run).

Sizes are odd on purpose (Nq = 37, Nk = 53, D = 40 with Dv = 24 or 64: the head-dim padding
both ways)."""
import pytest
import torch

from fasttrack import ops
from fasttrack.ops import aten_backend as A
from fasttrack.ops import dispatch
from _oracle import R, make_inputs, rel_err


def _ref_grads(q, k, v, do, dl):
    """d/d(q, k, v) of <O, dO> + <L, dL> through the materializing float64 reference."""
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    o, l = R.attention(*leaves)
    return (o, l), torch.autograd.grad((o, l), leaves, (do.double(), dl.double()))


@pytest.mark.parametrize("dv", [24, 64])
def test_lse_gradient_through_the_augmented_column(dv, rng):
    """The aten backward has no dlse input; the augmented column must give the exact dlse term
    (float32 vs float64: ~1e-6; dropping the column would miss by O(1))."""
    q, k, v, _ = make_inputs(2, 3, 37, 53, 40, dv, 1, torch.float32, rng)
    out, lse = ops.attention(q, k, v, backend="aten")
    do = torch.randn(out.shape, generator=rng)
    dl = torch.randn(lse.shape, generator=rng)
    (ro, rl), want = _ref_grads(q, k, v, do, dl)
    assert rel_err(out, ro) < 2e-6 and (lse.double() - rl).abs().max() < 1e-5
    got = torch.autograd.grad((out, lse), (q, k, v), (do, dl))
    for name, g, w in zip("qkv", got, want):
        assert rel_err(g, w) < 2e-5, name
    # Only one of the two cotangents: the backward gets None for the other.
    for use_do, use_dl in ((True, False), (False, True)):
        out, lse = ops.attention(q, k, v, backend="aten")
        outs, cots = [out] if use_do else [lse], [do] if use_do else [dl]
        got = torch.autograd.grad(outs, (q, k, v), cots)
        _, want = _ref_grads(q, k, v, do if use_do else torch.zeros_like(do),
                             dl if use_dl else torch.zeros_like(dl))
        for g, w in zip(got, want):
            assert rel_err(g, w) < 2e-5, (use_do, use_dl)


def test_gradcheck_float64(rng):
    """Finite differences on the CPU flash kernel's float64 path, lse included."""
    q, k, v, _ = make_inputs(1, 2, 5, 6, 3, 4, 1, torch.float64, rng)
    assert torch.autograd.gradcheck(lambda a, b, c: ops.attention(a, b, c, backend="aten"), (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_within_twice_plain_pytorch(dtype, rng):
    """16-bit: out, lse and the gradients (with dlse) within 2x the error of the materializing
    reference run in the same dtype, plus a floor (DESIGN section 3)."""
    q, k, v, _ = make_inputs(1, 2, 61, 53, 40, 40, 1, dtype, rng)
    out, lse = ops.attention(q, k, v, backend="aten")
    do = torch.randn(out.shape, generator=rng).to(dtype)
    dl = torch.randn(lse.shape, generator=rng)
    got = torch.autograd.grad((out, lse), (q, k, v), (do, dl))
    (ro, rl), want = _ref_grads(q, k, v, do, dl)
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    po, pl = R.attention(*leaves)
    plain = torch.autograd.grad((po, pl), leaves, (do, dl.to(pl.dtype)))
    floor = 2e-3 if dtype == torch.float16 else 1.6e-2
    assert rel_err(out, ro) <= 2 * rel_err(po, ro) + floor
    assert (lse.double() - rl).abs().max() <= 2 * (pl.double() - rl).abs().max() + floor
    for name, g, w, p in zip("qkv", got, want, plain):
        assert rel_err(g, w) <= 2 * rel_err(p, w) + floor, name


def test_lse_fwd(rng):
    q, k, _, _ = make_inputs(2, 2, 37, 53, 40, 40, 1, torch.float32, rng, requires_grad=False)
    assert (A.lse_fwd(q, k, 0.3).double() - R.attention(q.double(), k.double(), k.double(), scale=0.3)[1]).abs().max() < 1e-5


def test_reasons():
    q = torch.randn(1, 2, 5, 8)
    cross = torch.rand(1, 5, 3)
    assert A.reasons("attention", q, q, q) == [] and A.reasons("lse_fwd", q, q) == []
    for op in ("self_cross", "cross_attention_bwd", "box_branch"):
        assert any("attention and lse only" in r for r in A.reasons(op, q, q, cross))
    assert any("Nk = 0" in r for r in A.reasons("attention", q, q[:, :, :0], q[:, :, :0]))
    assert any("4-D" in r for r in A.reasons("attention", q[0], q[0], q[0]))
    with pytest.raises(dispatch.BackendUnavailable, match="attention and lse only"):
        ops.self_cross(q, q, cross, backend="aten")


def test_cuda_reasons_and_auto_gate():
    """CUDA tensors (fake: no GPU needed to ask): float64 and wide heads refused, and "auto"
    skips the unverified CUDA path with a reason while a forced "aten" takes it."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        q = torch.empty(1, 2, 5, 64, device="cuda", dtype=torch.float16)
        assert A.reasons("attention", q, q, q) == []
        assert any("float64" in r for r in A.reasons("attention", *(q.double(),) * 3))
        wide = torch.empty(1, 2, 5, 256, device="cuda", dtype=torch.float16)
        assert any("> 256" in r for r in A.reasons("attention", wide, wide, wide))
        auto = dispatch.reasons("aten", "attention", q, q, q, auto=True)
    assert ("cuda" in dispatch.ATEN_AUTO_DEVICES) == (auto == [])
    if "cuda" not in dispatch.ATEN_AUTO_DEVICES:
        assert any("has not passed the GPU tests" in r for r in auto)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("d,dv", [(40, 24), (40, 64), (64, 64)])
def test_cuda_path_shapes_on_meta(dtype, d, dv):
    """The CUDA calls (flash for 16-bit, memory-efficient for float32), padding and the
    augmented column, through PyTorch's shape functions of the same ops: right signatures,
    output shapes and dtypes. Numerics: GPU only (dispatch.ATEN_AUTO_DEVICES)."""
    assert A._use_flash(torch.empty(1, device="meta", dtype=dtype)) == (dtype == torch.float16)
    q = torch.empty(2, 3, 37, d, device="meta", dtype=dtype)
    k = torch.empty(2, 3, 53, d, device="meta", dtype=dtype)
    v = torch.empty(2, 3, 53, dv, device="meta", dtype=dtype)
    out, lse = A.attention_fwd(q, k, v, 0.3)
    assert out.shape == (2, 3, 37, dv) and out.dtype == dtype
    assert lse.shape == (2, 3, 37) and lse.dtype == torch.float32
    for dlse in (None, torch.empty_like(lse)):
        dq, dk, dvv = A.attention_bwd(q, k, v, out, lse, torch.empty_like(out), dlse, 0.3)
        assert (dq.shape, dk.shape, dvv.shape) == (q.shape, k.shape, v.shape)
        assert dq.dtype == dk.dtype == dvv.dtype == dtype


def test_torch_backend_attention_uses_the_cpu_flash_kernel(monkeypatch, rng):
    """The torch backend's CPU attention is the aten CPU kernel (same numbers, no slabs)."""
    from fasttrack.ops import torch_backend
    calls = []
    real = A._kernel_fwd
    monkeypatch.setattr(A, "_kernel_fwd", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q, k, v, _ = make_inputs(1, 2, 37, 53, 40, 24, 1, torch.float32, rng, requires_grad=False)
    out, lse = torch_backend.attention_fwd(q, k, v, 0.3)
    ro, rl = R.attention(q.double(), k.double(), v.double(), scale=0.3)
    assert calls and rel_err(out, ro) < 2e-6 and (lse.double() - rl).abs().max() < 1e-5
