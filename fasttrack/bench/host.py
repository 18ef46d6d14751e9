"""Bench section "host": what one op call costs the host, beside one SDPA call.

Every call of a fasttrack op pays Python before the device does anything: argument checks,
backend selection, the launcher's allocations and grid, the launch itself. On a GPU that cost
is paid on every call, on top of the kernel, so it is measured here on any machine.

`cases(device, quick)`, one row per (op, backend, pass), at a tiny shape (B=1, H=2, N=16, D=16,
T=8) where the device work is negligible, each measured beside torch's
scaled_dot_product_attention on the same tensors (the yardstick: its host cost; on the CPU it
also does the tiny attention):
  triton      fasttrack's Triton backend with the device launch excluded
              (fasttrack.kernels.stub_launches: everything up to the Triton launch call; on
              the CPU the kernels never run, so the backend is asked for by name);
  aten        attention on PyTorch's own fused kernel (the aten backend); not stubbed: on the
              CPU its tiny attention is in the number, as it is in SDPA's;
  torch       the memory-lean PyTorch backend, not stubbed;
  auto        what backend="auto" takes here, not stubbed.
Fields: us_per_call and sdpa_us, each the fastest of ROUNDS batches of CALLS calls, the op's and
SDPA's batches interleaved (`side_by_side`); x_sdpa, the median ratio of adjacent batches. Pass "fwd+bwd"
includes a backward of ones through the first output (SDPA's too). Goal: x_sdpa <= 1.5 for
the stubbed Triton attention, cross_attention and self_cross forward and attention
forward + backward.

On a CUDA device the section adds, at SD-64 in float16, per op and backend: wall_us (one call,
synchronized) against kernel_us (device time of the call's kernels, torch.profiler): the
difference is what the host adds. That part has not run on a GPU yet.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from types import SimpleNamespace

import torch

from .. import ops
from .harness import Case

CALLS = 50  # op calls per timed batch: microsecond calls need batches to reach clock precision
ROUNDS = 15  # batches of the op and of SDPA, interleaved; the minimum of each is kept

_OPS = {
    "attention": lambda x, b: ops.attention(x.q, x.k, x.v, backend=b),
    "cross_attention": lambda x, b: ops.cross_attention(x.q, x.tk, x.tv, backend=b),
    "self_cross": lambda x, b: ops.self_cross(x.q, x.k, x.cross, backend=b),
    # with the lse of an attention call (how Diff-Tracker calls it): one kernel, not two
    "self_cross(lse)": lambda x, b: ops.self_cross(x.q, x.k, x.cross, lse=x.lse, backend=b),
}


def _inputs(device, dtype, B=1, H=2, N=16, D=16, T=8, grad=False):
    g = torch.Generator().manual_seed(0)

    def rn(*s):
        return torch.randn(*s, generator=g).to(device, dtype).requires_grad_(grad)
    cross = torch.softmax(torch.randn(B, N, T, generator=g), -1).to(device, dtype).requires_grad_(grad)
    x = SimpleNamespace(q=rn(B, H, N, D), k=rn(B, H, N, D), v=rn(B, H, N, D), cross=cross,
                        tk=rn(B, H, T, D), tv=rn(B, H, T, D))
    x.lse = torch.logsumexp(x.q.detach().float() @ x.k.detach().float().transpose(-1, -2) * D ** -0.5,
                            -1).requires_grad_(grad)
    return x


def _one(fn, backward: bool):
    if not backward:
        return fn

    def fwd_bwd():
        out = fn()
        out = out[0] if isinstance(out, tuple) else out
        out.backward(torch.ones_like(out))
    return fwd_bwd


@contextlib.contextmanager
def _stubbed(device):
    """Triton launches stubbed; on the CPU also TRITON_INTERPRET=1 so that the Triton backend
    accepts CPU tensors (the interpreter never runs: nothing is launched)."""
    from ..kernels import stub_launches
    old = os.environ.get("TRITON_INTERPRET")
    if device.type == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        with stub_launches():
            yield
    finally:
        if device.type == "cpu":
            if old is None:
                os.environ.pop("TRITON_INTERPRET", None)
            else:
                os.environ["TRITON_INTERPRET"] = old


def side_by_side(fn, sdpa, device, stub: bool) -> dict:
    """us_per_call of fn and of sdpa, measured in ROUNDS interleaved batches of CALLS calls
    (fn's launches stubbed where asked): each the minimum batch (noise on a shared machine only
    ever adds time). x_sdpa is the median over rounds of fn's batch over the SDPA batch run
    right after it: this VM's speed drifts by up to 2x within minutes, and not by the same factor
    for Python-heavy and C-heavy code, so a ratio of two minima taken minutes apart can mix two
    speeds, while adjacent batches share one."""
    def ctx():
        return _stubbed(device) if stub else contextlib.nullcontext()

    def batch(f):
        t0 = time.perf_counter()
        for _ in range(CALLS):
            f()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / CALLS * 1e6

    with ctx():
        for _ in range(3):
            batch(fn)
    batch(sdpa)
    ours, theirs = [], []
    for _ in range(ROUNDS):
        with ctx():
            ours.append(batch(fn))
        theirs.append(batch(sdpa))
    ratios = sorted(a / b for a, b in zip(ours, theirs))
    return {"us_per_call": min(ours), "sdpa_us": min(theirs), "x_sdpa": ratios[len(ratios) // 2]}


def _backends(device, op: str) -> list[tuple[str, bool]]:
    """(backend, stubbed) rows of `op` that can run here."""
    names = [("auto", False), ("torch", False)]
    if op == "attention":
        names.insert(1, ("aten", False))
    try:
        import triton  # noqa: F401
        names.append(("triton", True))
    except ImportError:
        pass
    return names


def wall_and_kernel(fn, device) -> dict:
    """CUDA: wall_us, the fastest of 20 synchronized calls, and kernel_us, the device time of
    one call's kernels (torch.profiler kernel events over 5 calls, divided by 5); host_us is
    their difference. Unverified: written without a GPU."""
    from torch.profiler import ProfilerActivity, profile
    for _ in range(3):
        fn()
    torch.cuda.synchronize(device)
    wall = math.inf
    for _ in range(20):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        wall = min(wall, (time.perf_counter() - t0) * 1e6)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        torch.cuda.synchronize(device)
    kernel = sum(e.time_range.elapsed_us() for e in prof.events()
                 if e.device_type == torch.autograd.DeviceType.CUDA) / 5
    return {"wall_us": wall, "kernel_us": kernel, "host_us": wall - kernel}


def _gpu_cases(device) -> list[Case]:
    """SD-64 float16 on CUDA: one synchronized call's wall time against its kernels' time."""
    from .ops import SHAPES
    s = SHAPES["SD-64"]
    x = _inputs(device, torch.float16, s.B, s.H, s.N, s.D, s.T)
    fns = {("attention", "sdpa"): lambda: torch.nn.functional.scaled_dot_product_attention(x.q, x.k, x.v)}
    for op, call in _OPS.items():
        for backend, _ in _backends(device, op):
            fns[(op, backend)] = lambda call=call, b=backend: call(x, b)
    return [Case("host", {"shape": s.name, "op": op, "impl": impl, "pass": "fwd"}, unit=None,
                 check=lambda row, _o, fn=fn: wall_and_kernel(fn, device))
            for (op, impl), fn in fns.items()]


def cases(device, quick: bool = True) -> list[Case]:
    """The section's cases (module docstring); quick and full are the same (seconds)."""
    device = torch.device(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    out = []
    for backward in (False, True):
        pass_ = "fwd+bwd" if backward else "fwd"
        x = _inputs(device, dtype, grad=backward)
        sdpa = _one(lambda x=x: torch.nn.functional.scaled_dot_product_attention(x.q, x.k, x.v), backward)
        for op, call in _OPS.items():
            for backend, stub in _backends(device, op):
                fn = _one(lambda call=call, b=backend, x=x: call(x, b), backward)
                out.append(Case("host", {"shape": "tiny", "op": op, "impl": backend, "pass": pass_},
                                unit=None, info={"launch": "stubbed" if stub else "run"},
                                check=lambda row, _o, fn=fn, sdpa=sdpa, stub=stub: side_by_side(fn, sdpa, device, stub)))
    if device.type == "cuda":
        out += _gpu_cases(device)
    return out
