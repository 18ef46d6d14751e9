"""Bench section "ops": the attention-map ops against the eager reference and map-free SDPA.

`cases(device, quick)` gives one case per (shape, pass, op, implementation); unit "call" (one
op call, with its backward for pass "fwd+bwd"), FLOPs known.

Shapes (DESIGN / issue 2): SD-64 (B=2, H=5, N=4096, D=64, T=77), SD-96 (N=9216),
SD-128 (B=1, H=10, N=16384). On a CUDA device: SD-64 (quick, the default of `fasttrack bench`),
all three (`--full`). On the CPU: the table at the `tiny` shape and the headline case (self_cross
forward) at SD-64, where the reference materializes 2 x 5 x 4096^2 floats (670 MB per map), with
one timed call (quick, the default); `--full`: the table at SD-32 and the headline case with the
harness's repeats.

Implementations compared, per op:
  reference  fasttrack.ops.reference: the eager, materializing PyTorch code users write today;
  torch / aten / triton / cuda  fasttrack's backends, where they can take the inputs (aten:
             attention only; the Triton interpreter on CPU is a correctness tool, not a speed:
             it is not timed);
  sdpa       torch's scaled_dot_product_attention without any map: the floor;
  flash-attn, xformers  when importable (GPU only), also without maps.
FLOPs counted per op (algorithmic, recomputation not counted): attention 2BHN^2(D + Dv),
self_cross 2BHN^2 D + 2BN^2 T (the heads share C), x3 for forward + backward.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from .. import ops
from ..ops import reference as R
from .harness import Case


@dataclass(frozen=True)
class Shape:
    name: str
    B: int
    H: int
    N: int
    D: int
    T: int


SHAPES = {
    "SD-64": Shape("SD-64", 2, 5, 4096, 64, 77),
    "SD-96": Shape("SD-96", 2, 5, 9216, 64, 77),
    "SD-128": Shape("SD-128", 1, 10, 16384, 64, 77),
    # SD's 32x32 attention layers: the CPU default for the full op table.
    "SD-32": Shape("SD-32", 2, 5, 1024, 64, 77),
    # The small shape of the default CPU run (quick=True; tests, `fasttrack bench` without --full).
    "tiny": Shape("tiny", 1, 2, 512, 40, 77),
}


ALL_OPS = ("self_cross", "attention", "cross_attention")


def default_plan(device: torch.device, quick: bool) -> list[tuple]:
    """(shape, ops, passes) or (shape, ops, passes, Case overrides) to run. On the CPU the table
    runs at a small shape and only the headline case (self_cross forward, where the reference's
    N x N map shows) at SD-64; quick (the default run) times that case once after one warm-up
    call (about 3.5 s per reference call on a 2-core CPU), so that `fasttrack bench` stays
    within minutes on a 2-core machine."""
    both = (False, True)
    if device.type == "cuda":
        shapes = ["SD-64"] if quick else ["SD-64", "SD-96", "SD-128"]
        return [(SHAPES[n], ALL_OPS, both) for n in shapes]
    headline = (SHAPES["SD-64"], ("self_cross",), (False,))
    if quick:
        return [(SHAPES["tiny"], ALL_OPS, both), (*headline, {"warmup": 1, "repeat": 1})]
    return [(SHAPES["SD-32"], ALL_OPS, both), headline]


def make_inputs(s: Shape, device, dtype, seed: int = 0, requires_grad: bool = False):
    """The op inputs of shape `s`: a namespace with q, k, v (B, H, N, D), cross (B, N, T)
    probabilities, tk, tv (B, H, T, D) text keys / values."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    sizes = dict(q=(s.B, s.H, s.N, s.D), k=(s.B, s.H, s.N, s.D), v=(s.B, s.H, s.N, s.D),
                 cross=(s.B, s.N, s.T), tk=(s.B, s.H, s.T, s.D), tv=(s.B, s.H, s.T, s.D))
    x = {n: torch.randn(*size, generator=g) for n, size in sizes.items()}
    x["cross"] = torch.softmax(x["cross"] * 2, -1)
    return SimpleNamespace(**{n: t.to(device, dtype).requires_grad_(requires_grad) for n, t in x.items()})


def flops(op: str, s: Shape, backward: bool = False) -> float:
    """Algorithmic FLOPs of one call of `op` at shape `s` (module docstring), x3 with backward."""
    n2 = float(s.N) ** 2
    if op == "attention":
        f = 2 * s.B * s.H * n2 * 2 * s.D
    elif op == "self_cross":
        f = 2 * s.B * s.H * n2 * s.D + 2 * s.B * n2 * s.T
    elif op == "cross_attention":
        f = 2 * s.B * s.H * s.N * s.T * 2 * s.D
    else:
        raise ValueError(f"op must be one of {ALL_OPS}, got {op!r}")
    return f * (3 if backward else 1)


def _peers(device) -> dict:
    """Map-free attention peers: name -> fn(q, k, v), or a reason string when the peer cannot
    run here (a missing package becomes a row that says so, not a silent gap)."""
    peers = {"sdpa": lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v)}
    if device.type != "cuda":
        return peers
    try:
        from flash_attn import flash_attn_func
        peers["flash-attn"] = lambda q, k, v: flash_attn_func(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    except Exception as e:  # ImportError, or a build for another torch/CUDA failing to load
        peers["flash-attn"] = f"skipped: flash_attn not importable ({type(e).__name__}: {e})"
    try:
        import xformers.ops as xops
        peers["xformers"] = lambda q, k, v: xops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    except Exception as e:
        peers["xformers"] = f"skipped: xformers not importable ({type(e).__name__}: {e})"
    return peers


def _backends(device) -> list[str]:
    names = ["torch", "aten"]  # aten: attention only (PyTorch's fused kernels with their lse)
    if device.type == "cuda":
        names.append("triton")
        from .. import HAS_CUDA_EXT
        if HAS_CUDA_EXT:
            names.append("cuda")
    return names


# op -> fn(x) of the eager reference, and fn(x, backend) of fasttrack's op (x: make_inputs)
_REFERENCE = {"self_cross": lambda x: R.self_cross(x.q, x.k, x.cross),
              "attention": lambda x: R.attention(x.q, x.k, x.v),
              "cross_attention": lambda x: R.cross_attention(x.q, x.tk, x.tv)}
_FASTTRACK = {"self_cross": lambda x, b: ops.self_cross(x.q, x.k, x.cross, backend=b),
              "attention": lambda x, b: ops.attention(x.q, x.k, x.v, backend=b),
              "cross_attention": lambda x, b: ops.cross_attention(x.q, x.tk, x.tv, backend=b)}


def _self_cross_lse_given(x, b):
    """self_cross with the lse of the layer's attention call, as the recorder and Diff-Tracker
    call it (one product pass, no normalization pass). The lse is computed once per inputs x,
    outside the timed call, and enters as a constant (no gradient into it)."""
    if not hasattr(x, "lse"):
        with torch.no_grad():
            x.lse = ops.attention(x.q.detach(), x.k.detach(), x.v.detach())[1]
    return ops.self_cross(x.q, x.k, x.cross, lse=x.lse, backend=b)


def _impls(device, op: str):
    """(impl, role, fn(x) or the reason it cannot run) for one op."""
    yield "reference", "reference", _REFERENCE[op]
    for b in _backends(device):
        if b != "aten" or op == "attention":
            yield b, "fasttrack", functools.partial(_FASTTRACK[op], b=b)
    if op == "self_cross":
        for b in _backends(device):
            if b != "aten":
                yield b + " (lse given)", "fasttrack", functools.partial(_self_cross_lse_given, b=b)
    if op == "attention":
        for name, peer in _peers(device).items():
            fn = peer if isinstance(peer, str) else (lambda x, peer=peer: peer(x.q, x.k, x.v))
            yield name + " (no maps)", "other", fn


def _call(fn, x, backward: bool):
    """The timed callable: fn(x), then (fwd+bwd) a backward of ones through its output."""
    if not backward:
        return lambda: fn(x)

    def fwd_bwd():
        out = fn(x)
        out = out[0] if isinstance(out, tuple) else out
        out.backward(torch.ones_like(out))
    return fwd_bwd


def cases(device, quick: bool = False, *, dtype=None, plan=None) -> list[Case]:
    """The section's cases (module docstring) for every (shape, ops, passes[, overrides]) of
    `plan` (default_plan when None; overrides: Case fields such as warmup and repeat).
    dtype: float16 on CUDA, float32 on the CPU by default. Inputs are built once per (shape,
    pass), when its first case runs."""
    device = torch.device(device)
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    out = []
    for s, which, passes, *overrides in plan or default_plan(device, quick):
        overrides = overrides[0] if overrides else {}
        for bwd in passes:
            inputs = functools.cache(functools.partial(make_inputs, s, device, dtype, requires_grad=bwd))
            pass_ = "fwd+bwd" if bwd else "fwd"
            for op in (o for o in ALL_OPS if o in which):
                for impl, role, fn in _impls(device, op):
                    runnable = not isinstance(fn, str)
                    out.append(Case(
                        "ops", {"shape": s.name, "op": op, "impl": impl, "pass": pass_},
                        setup=(lambda fn=fn, inputs=inputs, bwd=bwd: _call(fn, inputs(), bwd)) if runnable else None,
                        skip=None if runnable else fn, flops=flops(op, s, bwd), role=role,
                        group=(s.name, op, pass_), info={"dtype": str(dtype).replace("torch.", "")},
                        **overrides))
    return out
