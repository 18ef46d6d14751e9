"""Every op, every CPU-runnable backend, forward and backward, against the float64 references.

The Triton backend runs on CUDA tensors when a GPU is present (compiled kernels) and otherwise
on CPU tensors under TRITON_INTERPRET=1 (tests/conftest.py), so its sizes stay small; the torch
backend runs on the CPU, also at N=300 and with forced multi-chunk slabs. Sizes are odd on
purpose: N = 1, 37, 300, D = 40, T = 1, 77 divide no block size.
"""
import pytest
import torch

from fasttrack import ops
from fasttrack.ops import torch_backend
from _oracle import R, close, make_inputs, ref64, rel_err

BACKENDS = ["torch", "triton"]
# (B, H, Nq, Nk, D, Dv, T)
SHAPES = [
    (1, 1, 1, 1, 16, 16, 1),
    (2, 3, 37, 37, 40, 24, 77),
    (1, 2, 37, 53, 40, 40, 1),
]
SHAPES_TORCH_ONLY = [(1, 2, 300, 300, 40, 64, 77)]
FP32_TOL = 2e-6  # fp32 against float64: far under DESIGN's 1e-4


def _need(backend):
    if backend == "triton":
        pytest.importorskip("triton")


def _dev(backend) -> str:
    """Where a backend's cases run: the Triton kernels on the GPU when there is one (on a GPU
    machine the interpreter is off and CPU tensors would only test the refusal), else the CPU."""
    return "cuda" if backend == "triton" and torch.cuda.is_available() else "cpu"


def _shapes(backend):
    return SHAPES + (SHAPES_TORCH_ONLY if backend in ("torch", "aten") else [])


def _grad_ok(got, want64, yard32, floor=3e-5) -> bool:
    """A gradient within 2x the error of the same gradient taken by PyTorch autograd in float32
    on the materializing reference, plus a relative floor and an absolute one (DESIGN 3).

    The absolute term covers one honest difference: the flash backward forms dP - delta with
    delta = rowsum(dO * O) from the stored output, so when the two cancel (a single key: the
    softmax is constant and dq = s * dlse * k can be arbitrarily small) the result carries
    ~1e-7 * |dP| of absolute roundoff that PyTorch's materialized backward does not have. With
    O(1) inputs that is ~1e-6 per element at most; wrong kernels miss by far more."""
    err = float((got.detach().double() - want64.detach().double()).norm())
    scale = float(want64.detach().double().norm())
    yard = float((yard32.detach().double() - want64.detach().double()).norm())
    atol = 2e-6 * got.numel() ** 0.5
    return bool(torch.isfinite(got).all()) and err <= 2 * yard + floor * scale + atol


def _yard(fn, tensors, cots, **kw):
    """Gradients of the float32 reference: the PyTorch yardstick."""
    leaves = [t.detach().float().requires_grad_(True) for t in tensors]
    outs = fn(*leaves, **kw)
    outs = outs if isinstance(outs, tuple) else (outs,)
    return torch.autograd.grad(outs, leaves, [c.float() for c in cots], allow_unused=True)


def _cot(t, gen):
    return torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t.device, t.dtype)


@pytest.mark.parametrize("backend", BACKENDS + ["aten"])
def test_attention(backend, rng):
    _need(backend)
    for shape in _shapes(backend):
        q, k, v, _ = make_inputs(*shape, torch.float32, rng, device=_dev(backend))
        out, lse = ops.attention(q, k, v, backend=backend)
        (ro, rl), leaves = ref64(R.attention, q, k, v)
        assert out.shape == ro.shape and lse.shape == rl.shape and lse.dtype == torch.float32
        assert rel_err(out, ro) < FP32_TOL, shape
        # lse is compared in absolute terms (an error d in L is a relative error d in every
        # probability): with one key, L = s q.k can sit near 0 after cancellation in the fp32
        # dot, where a relative error of an O(1e-8) absolute one reads as 5e-6.
        assert (lse.double() - rl).abs().max() < FP32_TOL * max(1.0, rl.abs().max().item()), shape
        do, dl = _cot(out, rng), _cot(lse, rng)
        got = torch.autograd.grad((out, lse), (q, k, v), (do, dl))
        want = torch.autograd.grad((ro, rl), leaves, (do.double(), dl.double()))
        yard = _yard(R.attention, (q, k, v), (do, dl))
        for name, g, w, y in zip("qkv", got, want, yard):
            assert _grad_ok(g, w, y), (shape, "d" + name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("with_lse", [False, True])
def test_self_cross(backend, with_lse, rng):
    _need(backend)
    for shape in _shapes(backend):
        q, k, _, cross = make_inputs(*shape, torch.float32, rng, device=_dev(backend))
        # cross is indexed by queries: (B, Nq, T); the result by keys: (B, Nk, T).
        lse = None
        if with_lse:
            lse = R.attention(q.detach(), k.detach(), k.detach())[1].float().requires_grad_(True)
        out = ops.self_cross(q, k, cross, lse=lse, backend=backend)
        args = (q, k, cross) + ((lse,) if with_lse else ())
        fn = (lambda a, b, c, l: R.self_cross(a, b, c, lse=l)) if with_lse else R.self_cross
        ro, leaves = ref64(fn, *args)
        assert out.shape == (shape[0], shape[3], shape[6])
        assert rel_err(out, ro) < FP32_TOL, shape
        g = _cot(out, rng)
        got = torch.autograd.grad(out, args, g)
        want = torch.autograd.grad(ro, leaves, g.double())
        yard = _yard(fn, args, (g,))
        for name, a, b, y in zip(["q", "k", "cross", "lse"], got, want, yard):
            assert _grad_ok(a, b, y), (shape, "d" + name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_harmonize(backend, rng):
    _need(backend)
    B, H, N, D, T = 2, 2, 37, 40, 77
    q, k, _, cross = make_inputs(B, H, N, N, D, D, T, torch.float32, rng, device=_dev(backend))
    for alpha in (0.0, 0.5, 0.8, 1.0):
        out = ops.harmonize(q, k, cross, alpha=alpha, backend=backend)
        ro, leaves = ref64(lambda a, b, c: R.harmonize(a, b, c, alpha=alpha), q, k, cross)
        assert rel_err(out, ro) < FP32_TOL
        g = _cot(out, rng)
        got = torch.autograd.grad(out, (q, k, cross), g, allow_unused=True)
        want = torch.autograd.grad(ro, leaves, g.double(), allow_unused=True)
        yard = _yard(lambda a, b, c: R.harmonize(a, b, c, alpha=alpha), (q, k, cross), (g,))
        for a, b, y in zip(got, want, yard):
            if b is None or b.abs().max() == 0:  # alpha = 1: q, k get no gradient
                assert a is None or a.abs().max() == 0
            else:
                assert _grad_ok(a, b, y)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_attention(backend, rng):
    _need(backend)
    # Nk is a text length: 77, and 1 (a single token) must work too.
    for B, H, Nq, Nk, D, Dv in [(2, 3, 37, 77, 40, 24), (1, 1, 1, 1, 16, 16), (1, 2, 50, 13, 40, 40)]:
        q, k, v, _ = make_inputs(B, H, Nq, Nk, D, Dv, 1, torch.float32, rng, device=_dev(backend))
        out, probs = ops.cross_attention(q, k, v, backend=backend)
        (ro, rp), leaves = ref64(R.cross_attention, q, k, v)
        assert probs.shape == (B, Nq, Nk) and probs.dtype == q.dtype
        assert rel_err(out, ro) < FP32_TOL and rel_err(probs, rp) < FP32_TOL
        do, dp = _cot(out, rng), _cot(probs, rng)
        got = torch.autograd.grad((out, probs), (q, k, v), (do, dp))
        want = torch.autograd.grad((ro, rp), leaves, (do.double(), dp.double()))
        yard = _yard(R.cross_attention, (q, k, v), (do, dp))
        for name, a, b, y in zip("qkv", got, want, yard):
            assert _grad_ok(a, b, y), "d" + name


def test_cross_attention_long_text(rng):
    """Nk = 256 text tokens (the issue's lower bound) on the torch backend."""
    q, k, v, _ = make_inputs(1, 2, 45, 256, 32, 32, 1, torch.float32, rng)
    out, probs = ops.cross_attention(q, k, v, backend="torch")
    (ro, rp), _ = ref64(R.cross_attention, q, k, v)
    assert rel_err(out, ro) < FP32_TOL and rel_err(probs, rp) < FP32_TOL


def test_torch_backend_chunks(monkeypatch, rng):
    """Force slabs of a few rows so that chunk boundaries (with a short last chunk) are crossed."""
    B, H, N, D, T = 1, 2, 37, 40, 7
    monkeypatch.setattr(torch_backend, "CHUNK_BYTES", B * H * N * 4 * 5)  # 5 rows, last has 2
    q, k, v, cross = make_inputs(B, H, N, N, D, D, T, torch.float64, rng)
    out, lse = ops.attention(q, k, v, backend="torch")
    sc = ops.self_cross(q, k, cross, backend="torch")
    co, cp = ops.cross_attention(q, k, v, backend="torch")
    (ro, rl), _ = ref64(R.attention, q, k, v)
    assert rel_err(out, ro) < 1e-12 and rel_err(lse, rl) < 1e-12
    assert rel_err(sc, R.self_cross(q, k, cross)) < 1e-12
    assert rel_err(cp, R.cross_attention(q, k, v)[1]) < 1e-12
    g = torch.randn(sc.shape, generator=rng, dtype=torch.float64)
    got = torch.autograd.grad(sc, (q, k, cross), g)
    want = torch.autograd.grad(R.self_cross(q, k, cross), (q, k, cross), g)
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-12
    # attention on the CPU takes PyTorch's flash kernel; the chunked path (GPU tensors) too:
    for flash in (True, False):
        monkeypatch.setattr(torch_backend, "_cpu_flash", lambda *t, f=flash: f)
        out, lse = ops.attention(q, k, v, backend="torch")
        assert rel_err(out, ro) < 1e-12 and rel_err(lse, rl) < 1e-12
        cots = (torch.randn(out.shape, generator=rng, dtype=torch.float64),
                torch.randn(lse.shape, generator=rng, dtype=torch.float64))
        got = torch.autograd.grad((out, lse), (q, k, v), cots)
        want = torch.autograd.grad(R.attention(q, k, v), (q, k, v), cots)
        for a, b in zip(got, want):
            assert rel_err(a, b) < 1e-12, flash


def test_gradcheck_torch_float64(rng):
    """torch.autograd.gradcheck on every op of the torch backend (finite differences)."""
    q, k, v, cross = make_inputs(1, 2, 5, 6, 3, 4, 3, torch.float64, rng)
    qs, ks, _, cs = make_inputs(1, 2, 6, 6, 3, 3, 3, torch.float64, rng)
    lse = R.attention(qs.detach(), ks.detach(), ks.detach())[1].requires_grad_(True)
    gc = torch.autograd.gradcheck
    assert gc(lambda a, b, c: ops.attention(a, b, c, backend="torch"), (q, k, v))
    assert gc(lambda a, b, c: ops.cross_attention(a, b, c, backend="torch"), (q, k, v))
    assert gc(lambda a, b, c: ops.self_cross(a, b, c, backend="torch"), (q, k, cross))
    assert gc(lambda a, b, c, l: ops.self_cross(a, b, c, lse=l, backend="torch"), (qs, ks, cs, lse))
    assert gc(lambda a, b, c: ops.harmonize(a, b, c, alpha=0.3, backend="torch"), (qs, ks, cs))


def test_lse_from_attention_chains_into_self_cross(rng):
    """attention -> lse -> self_cross(lse=...) has the same gradient as self_cross without lse:
    the lse path supplies exactly the softmax normalization term (DESIGN 1.3)."""
    q, k, v, cross = make_inputs(1, 2, 29, 29, 16, 16, 5, torch.float64, rng)
    _, lse = ops.attention(q, k, v, backend="torch")
    a = ops.self_cross(q, k, cross, lse=lse, backend="torch")
    b = ops.self_cross(q, k, cross, backend="torch")
    g = torch.randn(a.shape, generator=rng, dtype=torch.float64)
    ga = torch.autograd.grad(a, (q, k, cross), g)
    gb = torch.autograd.grad(b, (q, k, cross), g)
    assert rel_err(a, b) < 1e-12
    for x, y in zip(ga, gb):
        assert rel_err(x, y) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_backend_low_precision(dtype, rng):
    """Half inputs on the torch backend: error vs float64 within 2x the error of computing the
    same map the plain PyTorch way in that dtype, plus a small floor (DESIGN section 3)."""
    from _oracle import naive_lowp_probs
    B, H, N, D, T = 1, 2, 64, 40, 77
    q, k, _, cross = make_inputs(B, H, N, N, D, D, T, dtype, rng, requires_grad=False)
    out = ops.self_cross(q, k, cross, backend="torch")
    ref = R.self_cross(q.double(), k.double(), cross.double())
    s = D ** -0.5
    plain = (naive_lowp_probs(q, k, s).mean(1).transpose(-1, -2) @ cross)
    floor = 1e-3 if dtype == torch.float16 else 8e-3
    assert rel_err(out, ref) <= 2 * rel_err(plain, ref) + floor
