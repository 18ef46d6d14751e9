"""The op comparison behind `fasttrack bench` and benchmarks/bench_ops.py.

Shapes (DESIGN / issue 2): SD-64 (B=2, H=5, N=4096, D=64, T=77), SD-96 (N=9216),
SD-128 (B=1, H=10, N=16384). On a CUDA device all three run; on the CPU, SD-64 only (the
reference materializes 2 x 5 x 4096^2 floats there: 670 MB per map).

Implementations compared, per op:
  reference  fasttrack.ops.reference: the eager, materializing PyTorch code users write today;
  torch / triton / cuda  fasttrack's backends, where they can take the inputs (the Triton
             interpreter on CPU is a correctness tool, not a speed: it is not timed);
  sdpa       torch's scaled_dot_product_attention without any map: the floor;
  flash-attn, xformers  when importable (GPU only), also without maps.
FLOPs counted per op (algorithmic, recomputation not counted): attention 2BHN^2(D + Dv),
self_cross 2BHN^2 D + 2BN^2 T (the heads share C), x3 for forward + backward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import ops
from ..ops import reference as R
from .harness import PeakMemory, time_fn


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
    # A quick shape for smoke runs (tests, --quick on CPU).
    "tiny": Shape("tiny", 1, 2, 512, 40, 77),
}


ALL_OPS = ("self_cross", "attention", "cross_attention")


def default_plan(device: torch.device, quick: bool) -> list[tuple[Shape, tuple, tuple]]:
    """(shape, ops, passes) to run. On the CPU the full table runs at SD-32 and only the
    headline case (self_cross forward, where the reference's N x N map shows) at SD-64, so that
    `fasttrack bench` stays within minutes on a 2-core machine."""
    both = (False, True)
    if device.type == "cuda":
        shapes = ["SD-64"] if quick else ["SD-64", "SD-96", "SD-128"]
        return [(SHAPES[n], ALL_OPS, both) for n in shapes]
    if quick:
        return [(SHAPES["tiny"], ALL_OPS, both)]
    return [(SHAPES["SD-32"], ALL_OPS, both), (SHAPES["SD-64"], ("self_cross",), (False,))]


def make_inputs(s: Shape, device, dtype, seed: int = 0, requires_grad: bool = False):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(s.B, s.H, s.N, s.D, generator=g).to(device, dtype)
    k = torch.randn(s.B, s.H, s.N, s.D, generator=g).to(device, dtype)
    v = torch.randn(s.B, s.H, s.N, s.D, generator=g).to(device, dtype)
    cross = torch.softmax(torch.randn(s.B, s.N, s.T, generator=g) * 2, -1).to(device, dtype)
    text_k = torch.randn(s.B, s.H, s.T, s.D, generator=g).to(device, dtype)
    text_v = torch.randn(s.B, s.H, s.T, s.D, generator=g).to(device, dtype)
    ts = [q, k, v, cross, text_k, text_v]
    if requires_grad:
        for t in ts:
            t.requires_grad_(True)
    return ts


def flops(op: str, s: Shape, backward: bool = False) -> float:
    n2 = float(s.N) ** 2
    if op == "attention":
        f = 2 * s.B * s.H * n2 * 2 * s.D
    elif op == "self_cross":
        f = 2 * s.B * s.H * n2 * s.D + 2 * s.B * n2 * s.T
    elif op == "cross_attention":
        f = 2 * s.B * s.H * s.N * s.T * 2 * s.D
    else:
        raise ValueError(f"unknown op {op!r}")
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
    names = ["torch"]
    if device.type == "cuda":
        names.append("triton")
        from .. import HAS_CUDA_EXT
        if HAS_CUDA_EXT:
            names.append("cuda")
    return names


def _cases(s: Shape, device, dtype, backward: bool, which=ALL_OPS):
    """(op, impl, fn) for one shape. Each fn builds fresh graphs so timings are independent."""
    q, k, v, cross, tk, tv = make_inputs(s, device, dtype, requires_grad=backward)

    def run(f):
        if not backward:
            return lambda: f()
        def fb():
            out = f()
            out = out[0] if isinstance(out, tuple) else out
            out.backward(torch.ones_like(out))
        return fb

    if "self_cross" in which:
        yield "self_cross", "reference", run(lambda: R.self_cross(q, k, cross))
        for b in _backends(device):
            yield "self_cross", b, run(lambda b=b: ops.self_cross(q, k, cross, backend=b))
    if "attention" in which:
        yield "attention", "reference", run(lambda: R.attention(q, k, v))
        for b in _backends(device):
            yield "attention", b, run(lambda b=b: ops.attention(q, k, v, backend=b))
        for name, fn in _peers(device).items():
            if isinstance(fn, str):  # the reason this peer cannot run here
                yield "attention", name + " (no maps)", fn
            else:
                yield "attention", name + " (no maps)", run(lambda fn=fn: fn(q, k, v))
    if "cross_attention" in which:
        yield "cross_attention", "reference", run(lambda: R.cross_attention(q, tk, tv))
        for b in _backends(device):
            yield "cross_attention", b, run(lambda b=b: ops.cross_attention(q, tk, tv, backend=b))


def run(device=None, *, quick: bool = False, dtype=None, plan=None,
        repeat: int | None = None, progress=None) -> list[dict]:
    """Time and measure every (shape, op, implementation) of `plan` (default_plan when None);
    returns one dict per row.

    Row keys: section, shape, op, impl, pass ("fwd" / "fwd+bwd"), ms, tflops, peak_mb,
    dtype, device. A case that fails (e.g. out of memory) gets ms = NaN and an "error" key; a
    peer that is not installed gets a row with a "note" saying why, and no timing."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    plan = plan or default_plan(device, quick)
    repeat = repeat or (10 if device.type == "cuda" else 2)
    rows = []
    for s, which, passes in plan:
        for bwd in passes:
            for op, impl, fn in _cases(s, device, dtype, bwd, which):
                row = dict(section="ops", shape=s.name, op=op, impl=impl, **{"pass": "fwd+bwd" if bwd else "fwd"},
                           dtype=str(dtype).replace("torch.", ""), device=str(device))
                if isinstance(fn, str):
                    row["note"] = fn
                else:
                    try:
                        fn()  # warm-up: first-call dispatch, allocator growth, Triton compilation
                        with PeakMemory(device) as m:
                            ms = time_fn(fn, device, warmup=0, repeat=repeat)
                        row.update(ms=ms, peak_mb=m.peak_mb, tflops=flops(op, s, bwd) / (ms * 1e-3) / 1e12)
                    except Exception as e:  # OOM on a big reference, a kernel that fails to
                        # compile or a refused backend: a result for this row, not the end of the run
                        msg = (str(e).splitlines() or [""])[0][:200]
                        row.update(ms=math.nan, peak_mb=math.nan, tflops=math.nan,
                                   error=f"{type(e).__name__}: {msg}")
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
                rows.append(row)
                if progress is not None:
                    progress(row)
    return rows
