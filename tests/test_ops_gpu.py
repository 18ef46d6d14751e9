"""GPU tests: every compiled path of the Triton and CUDA kernels on CUDA tensors, against float64.

The rule (DESIGN section 3): a kernel's error against the float64 reference is at most twice the
error of the same computation done by plain PyTorch in that dtype, plus a small floor. The
PyTorch yardstick materializes the probabilities in the low dtype, as user code would, and the
float64 reference runs on the very inputs the kernels see (rounded to the low dtype first).
Errors are taken per row (_oracle.row_err): a wrong ragged last tile (N = 1031 ends 7 rows into
a tile) then shows at full size instead of diluted by the 1024 good rows.

What runs:
  test_forward_rule           every backend x dtype, attention / self_cross (with and without
                              lse) / cross_attention forwards, N from 1 to 1031, D = 40/64/128;
  test_cross_attention_paths  both forward paths of the Triton cross-attention (the fused kernel
                              for short key rows and flash + head-mean otherwise, as
                              kernels/_common.cross_config picks them for this GPU) and the
                              backward with dout and dprobs;
  test_backward_rule          16-bit backward of all three ops (attention with dout and dlse,
                              harmonize, self_cross with a given lse, cross_attention with
                              dprobs) at D = 40/64/128 and T = 77/256;
  test_aten_attention_rule    the aten backend (PyTorch's flash / memory-efficient kernels with
                              their lse, the lse gradient through the augmented column);
  test_box_branch             the fused DeTrack box branch kernel at ragged sizes, 3 dtypes;
  test_auto_runs_triton       backend="auto" on CUDA tensors runs Triton where not excluded (dispatch log);
  test_interpreter_refused    TRITON_INTERPRET=1 in a GPU process is refused with a warning.

Triton compiles one kernel per (dtype, padded head dims, token block, flags): the case lists
below cover each dtype x head dim x token count pairwise rather than as a full product, which
keeps the JIT compiles (1-3 s each) to a few dozen. Skipped without a CUDA device
(tests/conftest.py). The CUDA backend runs here by name: it is not in backend="auto" until these
tests have passed on a GPU (fasttrack.ops.dispatch).
"""
from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fasttrack import HAS_CUDA_EXT, ops
from fasttrack.ops import dispatch
from _oracle import R, row_err

pytestmark = pytest.mark.gpu

DEV = "cuda"
F16, BF16, F32 = torch.float16, torch.bfloat16, torch.float32
LOWP = [F16, BF16]
# Floors of the 2x rule, per dtype: the rounding of one output element (fp16 ~5e-4, bf16 ~4e-3)
# with a factor of 4 for the accumulated terms; float32 against float64 lands near 1e-6.
FLOOR = {F16: 2e-3, BF16: 1.6e-2, F32: 1e-5}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _backends():
    out = ["torch", "triton"]
    if HAS_CUDA_EXT:
        out.append("cuda")
    return out


def _seed(rng) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=rng))


def _inputs(shape, dtype, seed, requires_grad=False):
    """q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv), cross (B, Nq, T) on the GPU in `dtype`
    (q scaled so that the softmax is neither flat nor one-hot)."""
    B, H, Nq, Nk, D, Dv, T = shape
    g = torch.Generator(device=DEV).manual_seed(seed)
    q = (torch.randn(B, H, Nq, D, device=DEV, generator=g) * 1.5).to(dtype)
    k = torch.randn(B, H, Nk, D, device=DEV, generator=g).to(dtype)
    v = torch.randn(B, H, Nk, Dv, device=DEV, generator=g).to(dtype)
    c = torch.softmax(torch.randn(B, Nq, T, device=DEV, generator=g) * 2, -1).to(dtype)
    out = [q, k, v, c]
    return [t.requires_grad_(True) for t in out] if requires_grad else out


def _leaves(tensors, dtype=None):
    """Fresh leaf copies (in `dtype` when given) for one autograd graph."""
    return [t.detach().to(dtype or t.dtype).requires_grad_(True) for t in tensors]


def _cot(like, seed):
    """A random cotangent shaped like `like`, in its dtype, on its device."""
    g = torch.Generator(device=like.device).manual_seed(seed)
    return torch.randn(like.shape, device=like.device, generator=g).to(like.dtype)


# ---------------------------------------------------------------- plain PyTorch yardsticks
# User-style code in the inputs' own dtype: logits, softmax and products all materialized in
# that dtype (PyTorch accumulates matmuls in fp32 and rounds each result once).

def _plain_logits(q, k):
    return (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5


def plain_attention(q, k, v):
    z = _plain_logits(q, k)
    return torch.softmax(z, -1) @ v, torch.logsumexp(z, -1).float()


def plain_self_cross(q, k, c, lse=None):
    z = _plain_logits(q, k)
    p = torch.softmax(z, -1) if lse is None else torch.exp(z - lse.to(z.dtype)[..., None])
    return p.mean(1).transpose(-1, -2) @ c


def plain_harmonize(q, k, c, alpha):
    return alpha * c + (1 - alpha) * plain_self_cross(q, k, c)


def plain_cross_attention(q, k, v):
    p = torch.softmax(_plain_logits(q, k), -1)
    return p @ v, p.mean(1)


def _check(what, got, ref, yard, dtype, seed):
    """The 2x rule per row, with the numbers in the failure message."""
    e, y = row_err(got, ref), row_err(yard, ref)
    bound = 2 * y + FLOOR[dtype]
    assert e <= bound, f"{what}: row error {e:.3e} > 2 x {y:.3e} (PyTorch) + floor (seed {seed})"


def _check_grads(names, got, ref, yard, dtype, seed):
    for name, a, b, y in zip(names, got, ref, yard):
        assert a is not None and b is not None, name
        _check("d" + name, a, b, y, dtype, seed)


# ---------------------------------------------------------------------------- forwards
# (B, H, Nq, Nk, D, Dv, T): odd N (1, 37, 300, 1031 = 1024 + 7) so every query and key loop
# ends on a partial tile; D = 40 pads to 64, Dv = 24 to 32; T = 77 pads to 128, T = 256 is the
# widest self_cross token row.
SHAPES = [(2, 3, 37, 37, 40, 24, 77), (1, 5, 300, 300, 64, 64, 77), (1, 2, 1, 1, 128, 128, 1),
          (2, 4, 1031, 1031, 64, 64, 77)]
SHAPES_LOWP = [(1, 3, 1031, 1031, 128, 128, 77), (2, 2, 1031, 1031, 40, 40, 256)]
FORWARD_CASES = ([(b, d, s) for b in _backends() for d in LOWP + [F32] for s in SHAPES]
                 + [(b, d, s) for b in _backends() for d in LOWP for s in SHAPES_LOWP])


@pytest.mark.parametrize("backend,dtype,shape", FORWARD_CASES,
                         ids=[f"{b}-{str(d)[6:]}-{'x'.join(map(str, s))}" for b, d, s in FORWARD_CASES])
def test_forward_rule(backend, dtype, shape, rng):
    seed = _seed(rng)
    q, k, v, c = _inputs(shape, dtype, seed)
    q64, k64, v64, c64 = (t.double() for t in (q, k, v, c))
    ro, rl = R.attention(q64, k64, v64)
    rs = R.self_cross(q64, k64, c64)
    po, _ = plain_attention(q, k, v)
    ps = plain_self_cross(q, k, c)
    out, lse = ops.attention(q, k, v, backend=backend)
    sc = ops.self_cross(q, k, c, backend=backend)
    sc_lse = ops.self_cross(q, k, c, lse=lse, backend=backend)
    _check("attention out", out, ro, po, dtype, seed)
    # lse is accumulated in fp32 by every backend: far inside the 16-bit yardstick.
    assert row_err(lse, rl) <= 1e-5 + (1e-3 if dtype != F32 else 0), (seed, "lse")
    _check("self_cross", sc, rs, ps, dtype, seed)
    _check("self_cross(lse)", sc_lse, rs, ps, dtype, seed)
    if shape[3] <= 256:
        _, rp = R.cross_attention(q64, k64, v64)
        _, pp = plain_cross_attention(q, k, v)
        co, cp = ops.cross_attention(q, k, v, backend=backend)
        _check("cross_attention out", co, ro, po, dtype, seed)
        _check("cross_attention probs", cp, rp, pp, dtype, seed)


# ------------------------------------------------------------- Triton cross-attention paths

def _kernel_common():
    from fasttrack.kernels import _common

    return _common


def triton_cross_is_fused(Nk, D, Dv, dtype) -> bool:
    """Whether fasttrack.kernels.cross_attention_fwd takes the fused one-kernel path for these
    sizes on this GPU: the same config function the launcher calls, for this device's arch."""
    C = _kernel_common()
    arch = C.device_arch(torch.device(DEV))
    return C.cross_config(C.pad(Nk), C.pad(D), C.pad(Dv), dtype, arch) is not None


# (B, H, Nq, Nk, D, Dv, path the case is meant to reach). Short key rows (a handful of text
# tokens, Nk <= 32 at head dim <= 64) run fused; 77 and 256 tokens run flash + head-mean.
CROSS_CASES = [
    (2, 5, 1031, 29, 40, 40, "fused"),
    (1, 8, 1031, 32, 64, 48, "fused"),
    (2, 5, 1031, 77, 40, 40, "two-kernel"),
    (1, 3, 1031, 77, 128, 128, "two-kernel"),
    (1, 2, 300, 256, 64, 64, "two-kernel"),
]


@pytest.mark.parametrize("dtype", LOWP, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("case", CROSS_CASES, ids=[f"{c[6]}-Nk{c[3]}-D{c[4]}" for c in CROSS_CASES])
def test_cross_attention_paths(case, dtype, rng):
    """ops.cross_attention on the Triton backend, forward (out, probs) and backward (dout and
    dprobs), on the path the case names; a config change that moves a case to the other path
    fails here, so both paths stay covered."""
    B, H, Nq, Nk, D, Dv, path = case
    fused = triton_cross_is_fused(Nk, D, Dv, dtype)
    assert fused == (path == "fused"), (
        f"Nk={Nk} D={D} Dv={Dv} {dtype} was meant to take the {path} path but cross_config picks "
        f"the {'fused' if fused else 'two-kernel'} one on this GPU: choose another shape")
    seed = _seed(rng)
    q, k, v, _ = _inputs((B, H, Nq, Nk, D, Dv, 1), dtype, seed)
    ours, l64, lp = _leaves((q, k, v)), _leaves((q, k, v), torch.float64), _leaves((q, k, v))
    out, probs = ops.cross_attention(*ours, backend="triton")
    ro, rp = R.cross_attention(*l64)
    po, pp = plain_cross_attention(*lp)
    _check("out", out, ro, po, dtype, seed)
    _check("probs", probs, rp, pp, dtype, seed)
    do, dp = _cot(out, seed + 1), _cot(probs, seed + 2)
    got = torch.autograd.grad((out, probs), ours, (do, dp))
    want = torch.autograd.grad((ro, rp), l64, (do.double(), dp.double()))
    yard = torch.autograd.grad((po, pp), lp, (do, dp))
    _check_grads("qkv", got, want, yard, dtype, seed)


def test_cross_attention_paths_cover_both():
    """CROSS_CASES reaches the fused kernel and the two-kernel path in every 16-bit dtype."""
    for dtype in LOWP:
        paths = {triton_cross_is_fused(c[3], c[4], c[5], dtype) for c in CROSS_CASES}
        assert paths == {True, False}, (dtype, paths)


# ---------------------------------------------------------------------------- backwards
# (dtype, D, T): each head dim with both token counts and both dtypes, pairwise. T is the token
# count of cross for self_cross / harmonize and the key count (text tokens) of cross_attention.
BWD_CASES = [(F16, 40, 77), (BF16, 40, 256), (F16, 64, 256), (BF16, 64, 77), (F16, 128, 77),
             (BF16, 128, 256)]
BWD_N = 259  # queries and image keys: 256 + 3, a ragged last tile for every block size


@pytest.mark.parametrize("dtype,D,T", BWD_CASES,
                         ids=[f"{str(d)[6:]}-D{D}-T{T}" for d, D, T in BWD_CASES])
def test_backward_rule(dtype, D, T, rng):
    """Gradients of the 16-bit Triton backward of every op against float64 autograd, with
    PyTorch's own autograd in that dtype as the yardstick."""
    seed = _seed(rng)
    B, H, N = 2, 3, BWD_N
    q, k, v, c = _inputs((B, H, N, N, D, D, T), dtype, seed)

    # attention: dout and dlse both reach the flash backward (dlse adds to delta).
    ours, l64, lp = _leaves((q, k, v)), _leaves((q, k, v), torch.float64), _leaves((q, k, v))
    out, lse = ops.attention(*ours, backend="triton")
    ro, rl = R.attention(*l64)
    po, pl = plain_attention(*lp)
    do, dl = _cot(out, seed + 1), _cot(lse, seed + 2)
    got = torch.autograd.grad((out, lse), ours, (do, dl))
    want = torch.autograd.grad((ro, rl), l64, (do.double(), dl.double()))
    yard = torch.autograd.grad((po, pl), lp, (do, dl))
    _check_grads("qkv", got, want, yard, dtype, seed)

    # harmonize (self_cross without lse: the kernel recomputes it) ...
    ours, l64, lp = _leaves((q, k, c)), _leaves((q, k, c), torch.float64), _leaves((q, k, c))
    m = ops.harmonize(*ours, alpha=0.3, backend="triton")
    g = _cot(m, seed + 3)
    got = torch.autograd.grad(m, ours, g)
    want = torch.autograd.grad(R.harmonize(*l64, alpha=0.3), l64, g.double())
    yard = torch.autograd.grad(plain_harmonize(*lp, 0.3), lp, g)
    _check_grads(["q", "k", "cross"], got, want, yard, dtype, seed)

    # ... and self_cross with a given lse, which then gets a gradient of its own.
    lse0 = R.attention(q, k, k)[1].float()
    ours = _leaves((q, k, c, lse0))
    l64, lp = _leaves((q, k, c, lse0), torch.float64), _leaves((q, k, c, lse0))
    sc = ops.self_cross(*ours[:3], lse=ours[3], backend="triton")
    g = _cot(sc, seed + 4)
    got = torch.autograd.grad(sc, ours, g)
    want = torch.autograd.grad(R.self_cross(*l64[:3], lse=l64[3]), l64, g.double())
    yard = torch.autograd.grad(plain_self_cross(*lp[:3], lse=lp[3]), lp, g)
    _check_grads(["q", "k", "cross", "lse"], got, want, yard, dtype, seed)

    # cross_attention over T text keys: dprobs enters every head's dP.
    _, tk, tv, _ = _inputs((B, H, 1, T, D, D, 1), dtype, seed + 5)
    ours, l64, lp = _leaves((q, tk, tv)), _leaves((q, tk, tv), torch.float64), _leaves((q, tk, tv))
    out, probs = ops.cross_attention(*ours, backend="triton")
    ro, rp = R.cross_attention(*l64)
    po, pp = plain_cross_attention(*lp)
    do, dp = _cot(out, seed + 6), _cot(probs, seed + 7)
    got = torch.autograd.grad((out, probs), ours, (do, dp))
    want = torch.autograd.grad((ro, rp), l64, (do.double(), dp.double()))
    yard = torch.autograd.grad((po, pp), lp, (do, dp))
    _check_grads("qkv", got, want, yard, dtype, seed)


# ------------------------------------------------------------------------ aten backend
# PyTorch's fused kernels with their lse (fasttrack.ops.aten_backend): flash for 16-bit,
# memory-efficient for float32; D = 40 with Dv = 24 pads both ways, and with dlse the
# augmented column widens the head to 48 / 72 / 136 (D = 128: 136 <= 256).
ATEN_CASES = [(2, 3, 1031, 1031, 40, 24), (1, 5, 300, 77, 64, 64), (1, 2, 1, 1, 128, 128)]


@pytest.mark.parametrize("dtype", [F16, BF16, F32], ids=["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("shape", ATEN_CASES, ids=["x".join(map(str, s)) for s in ATEN_CASES])
def test_aten_attention_rule(shape, dtype, rng):
    """The aten backend on CUDA (until this passes on a GPU, "auto" leaves it out there:
    dispatch.ATEN_AUTO_DEVICES): out, lse and the gradients with dout and dlse."""
    seed = _seed(rng)
    B, H, Nq, Nk, D, Dv = shape
    q, _, _, _ = _inputs((B, H, Nq, Nk, D, Dv, 1), dtype, seed)
    _, k, v, _ = _inputs((B, H, Nk, Nk, D, Dv, 1), dtype, seed + 1)
    ours, l64, lp = _leaves((q, k, v)), _leaves((q, k, v), torch.float64), _leaves((q, k, v))
    out, lse = ops.attention(*ours, backend="aten")
    ro, rl = R.attention(*l64)
    po, pl = plain_attention(*lp)
    _check("aten out", out, ro, po, dtype, seed)
    assert row_err(lse, rl) <= 1e-5 + (1e-3 if dtype != F32 else 0), (seed, "lse")
    do, dl = _cot(out, seed + 2), _cot(lse, seed + 3)
    got = torch.autograd.grad((out, lse), ours, (do, dl))
    want = torch.autograd.grad((ro, rl), l64, (do.double(), dl.double()))
    yard = torch.autograd.grad((po, pl), lp, (do, dl))
    _check_grads("qkv", got, want, yard, dtype, seed)


# --------------------------------------------------------------------------- box branch
# (B targets, Ns search tokens, C, H): B * 4 box rows never a multiple of 16; Ns = 37 / 257
# end the key loop on a partial tile; ViT-B (768, 12 heads of 64) and a narrow C = 80 with
# 5 heads of 16.
BOX_CASES = [(3, 37, 768, 12), (5, 257, 768, 12), (3, 257, 80, 5), (5, 37, 80, 5)]


def _box_module(C, H, gen):
    """Reference BoxBranch in float64 with weights large enough that every stage moves the
    output (1/sqrt(fan_in) matrices, O(0.2) biases, LayerNorm gains around 1)."""
    from fasttrack.trackers.detrack.box_branch import BoxBranch
    m = BoxBranch(C, H, 4.0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            scale = 1.0 / p.shape[-1] ** 0.5 if p.dim() == 2 else 0.2
            offset = 1.0 if name.endswith(("norm1.weight", "norm2.weight")) else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * scale + offset)
    return m.eval()


@pytest.mark.parametrize("dtype", [F16, BF16, F32], ids=["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("B,Ns,C,H", BOX_CASES)
def test_box_branch(B, Ns, C, H, dtype, rng):
    """fasttrack.kernels.box_branch.box_branch_fwd against the reference module in float64 (run
    on the rounded weights and inputs the kernel sees), with the module in `dtype` as the
    yardstick. b has a large mean (LayerNorm cancellation); k, v are strided views of a
    qkv-like (B, Ns, 3, H, D) tensor, as the visual block hands them over."""
    from fasttrack.kernels.box_branch import WEIGHT_NAMES, box_branch_fwd
    seed = _seed(rng)
    gen = torch.Generator().manual_seed(seed)
    m = _box_module(C, H, gen).to(DEV, dtype)
    m64 = copy.deepcopy(m).double()
    b = (torch.randn(B, 4, C, generator=gen) * 2 + 5).to(DEV, dtype)
    qkv = torch.randn(B, Ns, 3, H, C // H, generator=gen).to(DEV, dtype).permute(2, 0, 3, 1, 4)
    k, v = qkv[1], qkv[2]
    params = dict(m.named_parameters())
    with torch.no_grad():
        out = box_branch_fwd(b, k, v, [params[n] for n in WEIGHT_NAMES])
        ref = m64(b.double(), k.double(), v.double())
        yard = m(b, k, v)
    assert out.shape == (B, 4, C) and out.dtype == dtype
    _check("box branch", out, ref, yard, dtype, seed)


# ------------------------------------------------------------------------------ dispatch

def test_auto_runs_triton(caplog, rng):
    """backend="auto" on CUDA tensors runs the Triton kernels, forward and backward, except
    the ops in TRITON_AUTO_EXCLUDED (torch then; the CUDA backend once an op is in
    VERIFIED_CUDA_OPS), as the dispatch log at DEBUG says."""
    q, k, v, c = _inputs((1, 2, 67, 67, 64, 64, 77), F16, _seed(rng), requires_grad=True)
    with caplog.at_level(logging.DEBUG, logger="fasttrack.dispatch"):
        out, lse = ops.attention(q, k, v)
        sc = ops.self_cross(q, k, c)
        co, probs = ops.cross_attention(q, k, v)
        loss = out.float().sum() + lse.sum() + sc.float().sum() + co.float().sum() + probs.float().sum()
        loss.backward()
    for op in ("attention", "self_cross", "cross_attention"):
        want = "torch" if op in dispatch.TRITON_AUTO_EXCLUDED else "triton"
        if HAS_CUDA_EXT and op in dispatch.VERIFIED_CUDA_OPS:
            want = "cuda"
        if op == "attention" and "cuda" in dispatch.ATEN_AUTO_DEVICES:
            want = "aten"
        for name in (op, op + "_bwd"):
            assert f"{name}: auto chose backend {want}" in caplog.messages, (name, caplog.messages)


_INTERPRETED_GPU_PROCESS = textwrap.dedent("""
    import warnings
    import torch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fasttrack
        import fasttrack.kernels
    for w in caught:
        print("WARNING:", str(w.message).replace("\\n", " "))
    from fasttrack import ops
    from fasttrack.ops import dispatch
    q = torch.randn(1, 2, 37, 64, device="cuda", dtype=torch.float16)
    c = torch.softmax(torch.randn(1, 37, 77, device="cuda"), -1).half()
    calls = {
        "attention": lambda: ops.attention(q, q, q, backend="triton"),
        "self_cross": lambda: ops.self_cross(q, q, c, backend="triton"),
        "cross_attention": lambda: ops.cross_attention(q, q, q, backend="triton"),
    }
    for name, call in calls.items():
        try:
            call()
            torch.cuda.synchronize()
            print("RAN:", name)
        except dispatch.BackendUnavailable as e:
            print("REFUSED:", name, str(e).replace("\\n", " | "))
    print("AUTO:", dispatch.select("attention", "auto", q, q, q))
""")


def test_interpreter_refused():
    """TRITON_INTERPRET=1 in a process that has a GPU would run every Triton kernel on the CPU
    interpreter (it applies to all @triton.jit functions at import): fasttrack warns at import
    of fasttrack.kernels, the Triton backend refuses CUDA tensors instead of running them
    interpreted, and backend="auto" does not pick it."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    res = subprocess.run([sys.executable, "-c", _INTERPRETED_GPU_PROCESS], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text
    for op in ("attention", "self_cross", "cross_attention"):
        assert f"REFUSED: {op}" in res.stdout, text
        assert f"RAN: {op}" not in res.stdout, text
    refusal = [line for line in res.stdout.splitlines() if line.startswith("REFUSED: attention")][0]
    assert "TRITON_INTERPRET" in refusal, refusal
    assert "AUTO: triton" not in res.stdout, text
    warned = [line for line in text.splitlines() if "TRITON_INTERPRET" in line and "REFUSED" not in line]
    assert warned, f"no warning about TRITON_INTERPRET at import:\n{text}"


def test_cuda_is_exercised_when_built():
    """On a GPU machine the extension must have been built and must see the device, or the
    CUDA kernels above silently went untested."""
    from fasttrack import CUDA_EXT_ERROR
    assert HAS_CUDA_EXT, f"fasttrack._C unusable on a CUDA machine: {CUDA_EXT_ERROR}"
