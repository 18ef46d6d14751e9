"""The GPU perf lab: what one rare GPU session (15 device-minutes, starts included) should measure.

    python scripts/gpu_lab.py --out OUT [--budget 450] [--sections ops,sweep,ncu,trackers,shared]
                              [--shared-lab .gpu_shared/perf/gpu_lab.py] [--kernels REGEX]
    python scripts/gpu_lab.py --dry-run          # every section, shape and config; no GPU needed
    python scripts/gpu_lab.py --smoke --out OUT  # TRITON_INTERPRET=1 on tiny CPU shapes: plumbing only
    bash scripts/gpu_check.sh OUT --steps environment,install,lab   # how a GPU session runs it

Sections, in order (each writes OUT/<section>.json the moment it finishes, so a killed run keeps
what it measured; a section, and each case inside one, is skipped and recorded with the reason
once its share of --budget is spent):
  ops     per op wall time (synchronized wall clock per call, median) against device time (CUDA
          events via triton.testing.do_bench, and the profiler's kernel sum for one call), TFLOP/s
          and the ratio to SDPA, at SD-64 / SD-96 / SD-128 = (B, H, N, D) (2, 5, 4096, 64),
          (2, 5, 9216, 64), (1, 10, 16384, 64) with T = 77 text tokens, in float16 and bfloat16,
          forward and forward+backward: fasttrack.ops attention (with its lse), self_cross (lse
          given and not), cross_attention (head-mean probs over 77 keys); against SDPA, the eager
          code users write (self_cross: materialized softmax maps; cross_attention: softmax(Q K^T)
          materialized + mean over heads), the aten kernels that return the lse (flash / efficient
          / cudnn, whichever exist), FlexAttention compiled with return_lse=True, and flash-attn /
          xformers when importable.
  sweep   tile configs of every Triton kernel, launched directly: the kernels and their launch
          keywords come from the kernel modules' aot_specs(90) (kernels/_common.KernelSpec), the
          variant a launcher selects at each shape; every candidate (BLOCK_M, BLOCK_N, num_warps,
          num_stages) is checked against the default config's outputs and timed. A kernel whose
          arguments changed becomes an error row, never a crash. OUT/sweep.json: rows and the best
          config per (kernel, dtype, shape, variant).
  ncu     Nsight Compute (SpeedOfLight, Occupancy, WarpStateStats), one launch of each top kernel
          at SD-128; text reports OUT/ncu-<target>.txt. Skipped with the reason without ncu.
  trackers  each tracker's frame, patched and unpatched: DMTrack.dmtrack256 (its first GPU run),
          DeTrack.detrack256 at 1 and 64 targets (float32, random weights, 480 x 640 frames, the
          step in a CUDA graph as shipped), Diff-Tracker and DINTR on the SD 2.1 architecture
          at random weights (fasttrack.trackers.diffusion.sd.random_components("sd2.1"), float16,
          480 x 640 frames, the bench's quick settings). Per variant: init and first-frame
          seconds, warm-up frames, then frames/s over timed frames, one extra frame under
          fasttrack.trackers.watch.FrameWatch (aten ops, host reads / writes, host ms under the
          watch), and one torch.profiler trace of a few update_batch calls: per frame the host
          (CPU) op time against the device (CUDA) kernel time, the kernel launches (runtime
          launch calls, graph launches included) and the device kernels, the top-10 ops by self
          device time (OUT/trackers-<variant>.txt holds the profiler's table), the chrome trace
          gzipped as OUT/trace-<variant>.json.gz when under TRACE_LIMIT_MB. A variant that fails
          is an error row; the others still run. --smoke: the tiny models on the CPU.
  shared  the reviewer's instrument run as it is (python PATH --out OUT/shared-lab --budget S)
          when --shared-lab PATH is given (gpu_check.sh passes .gpu_shared/perf/gpu_lab.py when
          the device machine has it: one device call runs both).
At the end OUT/lab.json: device, capability, torch / triton / CUDA versions, git commit, and per
section its status, seconds and file.

The best configs become the committed per-arch defaults: `python scripts/apply_sweep.py
OUT/sweep.json` turns sweep.json into the proposed table for kernels/_common.py's config functions
(attention_config, self_cross_config, probs_config, cross_config), to paste with the run committed
under benchmarks/results/.

Exit status: 0 when the lab ran (rows with errors included), 2 for bad arguments or when there is no
CUDA GPU and neither --dry-run nor --smoke is given.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("ops", "sweep", "ncu", "trackers", "shared")
# A section's share of what is left of the budget when it starts, against the sections after it.
WEIGHTS = {"ops": 4.0, "sweep": 3.5, "ncu": 1.5, "trackers": 3.0, "shared": 4.0}
DEFAULT_BUDGET = 450.0  # s: with start-up, the lab stays within 8 minutes

# (name, B, H, N, D, T)
GPU_SHAPES = (("SD-64", 2, 5, 4096, 64, 77), ("SD-96", 2, 5, 9216, 64, 77), ("SD-128", 1, 10, 16384, 64, 77))
SMOKE_SHAPES = (("smoke", 1, 2, 40, 64, 77),)
DTYPES = ("float16", "bfloat16")
OPS = ("attention", "self_cross", "cross_attention")
PASSES = ("fwd", "fwd+bwd")
# Tile candidates (BLOCK_M, BLOCK_N, num_warps, num_stages) besides each variant's default.
SWEEP_CONFIGS = ((128, 128, 8, 2), (128, 64, 8, 2), (128, 64, 4, 3), (64, 128, 8, 2), (64, 64, 4, 3),
                 (64, 64, 8, 2), (64, 32, 4, 2), (32, 64, 4, 2))
SMOKE_SWEEP_CONFIGS = ((16, 16, 1, 1),)
SMOKE_KERNELS = r"^(_attention_fwd_kernel|_self_cross_fwd_kernel|_head_mean_probs_kernel)$"
SWEEP_MODULES = ("attention", "self_cross", "cross_attention")
# FlexAttention compiles per (shape, dtype, pass) with dynamic=False, 15-40 s each: only here.
FLEX_AT = {("SD-64", "float16"), ("SD-128", "float16")}
FLEX_WHERE = "compiled at float16, SD-64 and SD-128 only (15-40 s per compile), with 60 s left"
NCU_SECTIONS = ("SpeedOfLight", "Occupancy", "WarpStateStats")
# target -> kernel-name regex for ncu --kernel-name (the op each target runs: ncu_target)
NCU_TARGETS = {"attention_fwd": "_attention_fwd_kernel", "attention_dkdv": "_attention_bwd_dkdv_kernel",
               "self_cross_fwd": "_self_cross_fwd_kernel", "self_cross_dk": "_self_cross_bwd_dk_kernel",
               "cross_attention_probs": "_head_mean_probs_kernel|_cross_attention_fwd_kernel",
               "sdpa_fwd": "flash|fmha|cudnn"}
NCU_SHAPE = "SD-128"
# Section trackers: (tracker, targets) in the order they run (DMTrack first: its first GPU run;
# the SD trackers, the dearest, last), and per tracker (warm-up frames, timed frames, profiled
# frames, seconds a variant needs before it starts).
TRACKER_PLAN = (("DMTrack", 1), ("DeTrack", 1), ("DeTrack", 64), ("DiffTracker", 1), ("DINTR", 1))
TRACKER_FRAMES = {"DMTrack": (3, 10, 3, 20.0), "DeTrack": (3, 10, 3, 20.0),
                  "DiffTracker": (3, 5, 2, 45.0), "DINTR": (2, 3, 2, 90.0)}
SMOKE_TRACKER_FRAMES = (1, 1, 1, 2.0)
TRACKER_SIZE, SMOKE_TRACKER_SIZE = (480, 640), (96, 128)
TRACKER_MODELS = {"DMTrack": "dmtrack256 (random weights, float32)", "DeTrack": "detrack256 (random weights, float32)",
                  "DiffTracker": "SD 2.1 architecture, random weights, float16",
                  "DINTR": "SD 2.1 architecture, random weights, float16"}
TRACE_LIMIT_MB = 8.0  # a gzipped chrome trace above this is dropped (its size recorded)
# CUDA runtime / driver calls that launch device work (a CUDA graph launch counts once)
LAUNCH_RE = re.compile(r"^(cudaLaunchKernel|cudaLaunchKernelExC|cuLaunchKernel|cuLaunchKernelEx|"
                       r"cudaLaunchCooperativeKernel|cudaGraphLaunch|cuGraphLaunch)(_v\d+)?$")


# ------------------------------------------------------------------------------ budget and output
class Budget:
    """Wall-clock budget of the run, shared out to the sections as they start (WEIGHTS)."""

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.seconds = seconds
        self.deadline = self.start + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def section_deadline(self, name: str, later: list[str]) -> float:
        """Deadline of section `name` started now, with the sections `later` still to come."""
        total = WEIGHTS[name] + sum(WEIGHTS[s] for s in later)
        return time.monotonic() + max(0.0, self.left()) * WEIGHTS[name] / total


def out_of_time(deadline: float, need: float = 2.0) -> bool:
    """Whether less than `need` seconds are left before `deadline`."""
    return deadline - time.monotonic() < need


def write_json(path: Path, obj) -> None:
    """Write obj as JSON atomically (a killed run leaves the previous file or the new one)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str, allow_nan=True))
    tmp.replace(path)


def error_text(e: BaseException, limit: int = 300) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:limit]


# ------------------------------------------------------------------------------ environment
def import_fasttrack():
    """fasttrack with fasttrack.kernels importable from this checkout, installed or not (the
    repo-root kernels/ directory is the fasttrack.kernels package of an install)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import importlib.util

    import fasttrack
    if importlib.util.find_spec("fasttrack.kernels") is None:
        fasttrack.__path__.append(str(ROOT))  # ROOT/kernels becomes fasttrack.kernels
    import fasttrack.kernels  # noqa: F401
    return fasttrack


def environment(smoke: bool) -> dict:
    """Device, capability, versions and git commit (scripts/gpu_check_report.py's record)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import gpu_check_report
    env = gpu_check_report.environment()
    import triton
    env["triton"] = triton.__version__
    for key in ("device_name", "capability", "sm_count"):  # present, None on a CPU (--smoke)
        env.setdefault(key, None)
    env["smoke"] = smoke
    env["triton_interpret"] = os.environ.get("TRITON_INTERPRET")
    return env


def shapes(smoke: bool):
    from fasttrack.bench.ops import Shape
    return [Shape(*s) for s in (SMOKE_SHAPES if smoke else GPU_SHAPES)]


def torch_dtype(name: str):
    import torch
    return getattr(torch, name)


# ------------------------------------------------------------------------------ timing
def sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def wall_ms(fn, device, calls: int) -> float:
    """Median synchronized wall clock of one call, over `calls` calls (ms)."""
    times = []
    for _ in range(calls):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def kernel_ms(fn, calls: int = 3) -> float:
    """Device time of one call: the sum of its CUDA kernels in the profiler, over `calls` calls."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    us = sum(e.time_range.elapsed_us() for e in prof.events()
             if e.device_type == torch.autograd.DeviceType.CUDA)
    return us / calls / 1e3


def measure(fn, device, smoke: bool) -> dict:
    """wall_ms (synced median), event_ms (do_bench: back-to-back calls timed by CUDA events) and
    kernel_ms (profiler kernel sum) of fn; on the CPU (smoke) one warm-up and one timed call."""
    fn()
    if smoke or device.type != "cuda":
        return {"wall_ms": wall_ms(fn, device, 1), "event_ms": None, "kernel_ms": None}
    import triton
    wall = wall_ms(fn, device, 7)
    event = triton.testing.do_bench(fn, warmup=5, rep=25)
    return {"wall_ms": wall, "event_ms": event, "kernel_ms": kernel_ms(fn)}


# ------------------------------------------------------------------------------ section ops
def eager_cross_attention(q, k, v, scale):
    """What users write today: softmax(s Q K^T) materialized per head, then its mean over heads."""
    import torch
    p = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, dim=-1)
    return torch.matmul(p, v), p.mean(dim=1)


def _aten_with_lse(device):
    """name -> fn(q, k, v) of the aten kernels that return the lse; a reason string where the
    op does not exist in this torch."""
    import torch
    aten = torch.ops.aten
    out = {}
    for name, op, call in (
            ("aten flash (+lse)", "_scaled_dot_product_flash_attention",
             lambda f, q, k, v: f(q, k, v, 0.0, False, False)),
            ("aten efficient (+lse)", "_scaled_dot_product_efficient_attention",
             lambda f, q, k, v: f(q, k, v, None, True, 0.0, False)),
            ("aten cudnn (+lse)", "_scaled_dot_product_cudnn_attention",
             lambda f, q, k, v: f(q, k, v, None, True, 0.0, False, False))):
        f = getattr(aten, op, None)
        out[name] = (lambda q, k, v, f=f, call=call: call(f, q, k, v)) if f is not None else \
            f"skipped: torch {torch.__version__} has no aten.{op}"
    return out


def _flex(device, smoke: bool):
    """fn(q, k, v) of FlexAttention compiled with return_lse=True, or the reason it cannot run."""
    if smoke or device.type != "cuda":
        return "skipped: FlexAttention is compiled on the GPU only (not in --smoke)"
    try:
        import torch
        from torch.nn.attention.flex_attention import flex_attention
    except ImportError as e:
        return f"skipped: {error_text(e)}"
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, return_lse=True)


def op_impls(op: str, device, smoke: bool) -> list[tuple[str, object]]:
    """(impl, fn(x) or a reason string) of `op`; x holds q, k, v, cross, tk, tv and lse."""
    from fasttrack import ops
    from fasttrack.bench.ops import _peers
    from fasttrack.ops import reference as R
    from torch.nn.functional import scaled_dot_product_attention as sdpa
    if op == "attention":
        impls = [("fasttrack triton (+lse)", lambda x: ops.attention(x.q, x.k, x.v, backend="triton")),
                 ("sdpa", lambda x: sdpa(x.q, x.k, x.v))]
        for name, fn in _aten_with_lse(device).items():
            impls.append((name, fn if isinstance(fn, str) else (lambda x, fn=fn: fn(x.q, x.k, x.v))))
        flex = _flex(device, smoke)
        impls.append(("flex compiled (+lse)", flex if isinstance(flex, str) else (lambda x: flex(x.q, x.k, x.v))))
        for name, peer in _peers(device).items():
            if name != "sdpa":
                impls.append((name, peer if isinstance(peer, str) else (lambda x, p=peer: p(x.q, x.k, x.v))))
        return impls
    if op == "self_cross":
        return [("fasttrack triton", lambda x: ops.self_cross(x.q, x.k, x.cross, backend="triton")),
                ("fasttrack triton (lse given)",
                 lambda x: ops.self_cross(x.q, x.k, x.cross, lse=x.lse, backend="triton")),
                ("eager (materialized maps)", lambda x: R.self_cross(x.q, x.k, x.cross)),
                ("sdpa", lambda x: sdpa(x.q, x.k, x.v))]
    return [("fasttrack triton (+probs)", lambda x: ops.cross_attention(x.q, x.tk, x.tv, backend="triton")),
            ("eager softmax + head mean", lambda x: eager_cross_attention(x.q, x.tk, x.tv, x.q.shape[-1] ** -0.5)),
            ("sdpa", lambda x: sdpa(x.q, x.tk, x.tv))]


def op_inputs(shape, device, dtype, backward: bool):
    """fasttrack.bench.ops.make_inputs plus lse (from the fasttrack attention forward)."""
    import torch
    from fasttrack import ops
    from fasttrack.bench.ops import make_inputs
    x = make_inputs(shape, device, dtype, requires_grad=backward)
    with torch.no_grad():
        x.lse = ops.attention(x.q.detach(), x.k.detach(), x.v.detach(), backend="triton")[1]
    x.lse.requires_grad_(backward)
    return x


def timed_call(fn, x, backward: bool):
    """The callable a case times: fn(x), then for fwd+bwd a backward of ones through every
    floating output that needs a gradient."""
    import torch
    if not backward:
        return lambda: fn(x)

    def fwd_bwd():
        out = fn(x)
        outs = [o for o in (out if isinstance(out, tuple) else (out,))
                if isinstance(o, torch.Tensor) and o.requires_grad and o.is_floating_point()]
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    return fwd_bwd


def op_plan(smoke: bool) -> list[tuple]:
    """(shape, dtype, pass, op) cases of section ops, in the order they run."""
    dtypes = ("float16",) if smoke else DTYPES
    return [(s, d, p, op) for s in shapes(smoke) for d in dtypes for p in PASSES for op in OPS]


def run_ops(out: Path, deadline: float, smoke: bool, device) -> list[dict]:
    """Section ops (module docstring): one row per (shape, dtype, pass, op, impl)."""
    import torch
    from fasttrack.bench.ops import flops
    rows = []
    inputs = {}
    for shape, dname, pss, op in op_plan(smoke):
        backward = pss == "fwd+bwd"
        key = (shape.name, dname, backward)
        group = []
        for impl, fn in op_impls(op, device, smoke):
            row = {"shape": shape.name, "dtype": dname, "pass": pss, "op": op, "impl": impl}
            if isinstance(fn, str):
                row["skipped"] = fn
            elif impl.startswith("flex") and ((shape.name, dname) not in FLEX_AT or out_of_time(deadline, 60.0)):
                row["skipped"] = "FlexAttention " + FLEX_WHERE
            elif out_of_time(deadline, 5.0):
                row["skipped"] = "budget: section ops out of time"
            else:
                try:
                    if key not in inputs:
                        inputs.clear()  # one shape's inputs in memory at a time
                        inputs[key] = op_inputs(shape, device, torch_dtype(dname), backward)
                    row.update(measure(timed_call(fn, inputs[key], backward), device, smoke))
                    best = row["kernel_ms"] or row["event_ms"] or row["wall_ms"]
                    row["tflops"] = flops(op, shape, backward) / (best * 1e-3) / 1e12
                except Exception as e:  # OOM, an op this torch lacks for these inputs, ...
                    row["error"] = error_text(e)
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            group.append(row)
            print("ops", json.dumps(row, default=str), flush=True)
        add_sdpa_ratio(group)
        rows += group
        write_json(out / "ops.json", rows)  # partial results survive a kill
    inputs.clear()
    return rows


def add_sdpa_ratio(group: list[dict]) -> None:
    """x_sdpa = time / SDPA's time in the same (shape, dtype, pass, op) group, on the best
    device-time measure both rows have (kernel_ms, else event_ms, else wall_ms)."""
    sdpa = next((r for r in group if r["impl"] == "sdpa" and "error" not in r and "skipped" not in r), None)
    for r in group:
        if sdpa is None or "wall_ms" not in r:
            continue
        for key in ("kernel_ms", "event_ms", "wall_ms"):
            if r.get(key) and sdpa.get(key):
                r["x_sdpa"] = r[key] / sdpa[key]
                r["x_sdpa_on"] = key
                break


# ------------------------------------------------------------------------------ section sweep
# Launch grid of each Triton kernel from the sizes z (B, H, Nq, Nk, D, T) and its constexprs c.
GRIDS = {
    "_attention_fwd_kernel": lambda z, c: (cdiv(z["Nq"], c["BLOCK_M"]), z["B"] * z["H"]),
    "_attention_bwd_preprocess_kernel": lambda z, c: (cdiv(z["Nq"], c["BLOCK_M"]), z["B"] * z["H"]),
    "_attention_bwd_dq_kernel": lambda z, c: (cdiv(z["Nq"], c["BLOCK_M"]), z["B"] * z["H"]),
    "_attention_bwd_dkdv_kernel": lambda z, c: (cdiv(z["Nk"], c["BLOCK_N"]), z["B"] * z["H"]),
    "_attention_bwd_kernel": lambda z, c: (cdiv(z["Nk"], c["BLOCK_N"]), z["B"] * z["H"], z["n_split"]),
    "_self_cross_fwd_kernel": lambda z, c: (cdiv(z["Nk"], c["BLOCK_N"]), cdiv(z["T"], c["BLOCK_T"]),
                                            z["B"] * z["n_split"]),
    "_self_cross_bwd_preprocess_kernel": lambda z, c: (cdiv(z["Nq"], c["BLOCK_M"]), z["B"]),
    "_self_cross_bwd_dq_kernel": lambda z, c: (cdiv(z["Nq"], c["BLOCK_M"]),
                                               z["B"] * cdiv(z["H"], 2 if c.get("PAIR") else 1)),
    "_self_cross_bwd_dk_kernel": lambda z, c: (cdiv(z["Nk"], c["BLOCK_N"]),
                                               z["B"] * cdiv(z["H"], 2 if c.get("PAIR") else 1)),
    "_head_mean_probs_kernel": lambda z, c: (cdiv(z["Nq"], c["BLOCK_M"]), cdiv(z["Nk"], c["BLOCK_N"]), z["B"]),
    "_cross_attention_fwd_kernel": lambda z, c: (cdiv(z["Nq"], c["BLOCK_M"]), z["B"]),
}
# Kernels that see the text keys (Nk = T) rather than the image tokens (Nk = N).
TEXT_KEY_KERNELS = ("_head_mean_probs_kernel", "_cross_attention_fwd_kernel")
# Pointer arguments a kernel writes (filled with NaN before each launch, compared after): the
# gradients, the self x cross output and the head-mean map; O and LSE in the forward kernels
# (the backward ones read them) and DELTA in the preprocess kernels (the others read it).
GRADS = frozenset({"DQ", "DK", "DV", "DCROSS", "OUT", "PROBS"})


def written_arg(kernel: str, arg: str) -> bool:
    """Whether `kernel` writes its pointer argument `arg`."""
    if arg in GRADS:
        return True
    if arg in ("O", "LSE"):
        return kernel in ("_attention_fwd_kernel", "_cross_attention_fwd_kernel")
    return arg == "DELTA" and "preprocess" in kernel


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def tensor_shape(name: str, z: dict, kernel: str) -> tuple | None:
    """Shape of pointer argument `name` (B, H, Nq, Nk, D, T in z), None when unknown."""
    B, H, Nq, Nk, D, T = (z[k] for k in ("B", "H", "Nq", "Nk", "D", "T"))
    table = {"Q": (B, H, Nq, D), "K": (B, H, Nk, D), "V": (B, H, Nk, D), "O": (B, H, Nq, D),
             "DO": (B, H, Nq, D), "DQ": (B, H, Nq, D), "DK": (B, H, Nk, D), "DV": (B, H, Nk, D),
             "LSE": (B, H, Nq), "DLSE": (B, H, Nq), "DELTA": (B, H, Nq), "EXTRA": (B, Nq, z.get("ES", Nk)),
             "PROBS": (B, Nq, Nk), "C": (B, Nq, z.get("CS", T)), "DCROSS": (B, Nq, T),
             "G": (B, Nk, z.get("CS", T)),
             "OUT": (z["n_split"], B, Nk, T)}
    return table.get(name)


def sweep_variants(kernels_regex: str | None, smoke: bool) -> list:
    """The 16-bit KernelSpecs of aot_specs(90) at head dim 64 (and T = 77), one per distinct
    (kernel, dtype, constexprs): the variants the sweep times. Specs whose kernels the sweep has
    no grid rule for are kept: they become error rows."""
    import importlib
    import torch
    specs, seen = [], set()
    for mod in SWEEP_MODULES:
        for spec in importlib.import_module(f"fasttrack.kernels.{mod}").aot_specs(90):
            name = spec.kernel.__name__
            c = spec.constexprs
            if spec.dtype not in (torch.float16, torch.bfloat16) or c.get("D", 64) != 64 or c.get("T", 77) != 77:
                continue
            if smoke and spec.dtype != torch.float16:
                continue
            if kernels_regex and not re.search(kernels_regex, name):
                continue
            key = (name, spec.dtype, tuple(sorted((k, str(v)) for k, v in c.items())))
            if key not in seen:
                seen.add(key)
                specs.append(spec)
    return specs


def variant_label(spec) -> str:
    """What tells a spec from its siblings: the non-tile constexprs (HAS_V, EXTRA, ...)."""
    flags = {k: v for k, v in spec.constexprs.items()
             if not k.startswith("BLOCK_") and k not in ("D", "Dv", "T", "PREC", "PREC_C")}
    return spec.label + (" " + " ".join(f"{k}={v}" for k, v in sorted(flags.items())) if flags else "")


def candidates(spec, smoke: bool) -> list[dict]:
    """The default launch config of spec first, then SWEEP_CONFIGS applied to the tile
    constexprs it has (BLOCK_N stays the whole key row for the fused cross-attention kernel)."""
    c = spec.constexprs
    default = {"BLOCK_M": c.get("BLOCK_M"), "BLOCK_N": c.get("BLOCK_N"),
               "num_warps": spec.num_warps, "num_stages": spec.num_stages}
    out = [default]
    for bm, bn, w, s in (SMOKE_SWEEP_CONFIGS if smoke else SWEEP_CONFIGS):
        cand = {"BLOCK_M": bm if "BLOCK_M" in c else None, "BLOCK_N": bn if "BLOCK_N" in c else None,
                "num_warps": w, "num_stages": s}
        if spec.kernel.__name__ == "_cross_attention_fwd_kernel":
            cand["BLOCK_N"] = c["BLOCK_N"]
        if cand not in out:
            out.append(cand)
    return out


def sweep_sizes(spec, shape, device) -> dict:
    """z: the sizes the kernel runs at (Nk = T for the text-key kernels), the split of the self x
    cross forward filled in per candidate (split_sizes)."""
    name = spec.kernel.__name__
    nk = shape.T if name in TEXT_KEY_KERNELS or spec.constexprs.get("HAS_EXTRA") else shape.N
    # CS: the row stride the self x cross kernels read C and G with (T rounded up to 16 bytes)
    return {"B": shape.B, "H": shape.H, "Nq": shape.N, "Nk": nk, "D": shape.D, "T": shape.T, "n_split": 1,
            "m_blocks_per_split": 1, "device": device, "CS": spec.constexprs.get("CS", shape.T),
            "ES": spec.constexprs.get("ES", nk)}


def selected_at(spec, z) -> bool:
    """Whether a launcher selects this variant at sizes z: EXACT follows exact_delta(Nk), and
    the fused cross-attention kernel needs the whole key row in one BLOCK_N tile."""
    from fasttrack.kernels._common import exact_delta
    c = spec.constexprs
    if "EXACT" in c and bool(c["EXACT"]) != exact_delta(z["Nk"]):
        return False
    return spec.kernel.__name__ != "_cross_attention_fwd_kernel" or c.get("BLOCK_N", 0) >= z["Nk"]


def other_variant(spec, z, cand) -> str | None:
    """Why the launcher would pick another variant with the candidate's tiles (the one-pass
    attention backward writes dQ without atomics only while one key block covers Nk), or None."""
    c = spec.constexprs
    if c.get("DQ_ATOMIC") is False and cand["BLOCK_N"] and cdiv(z["Nk"], cand["BLOCK_N"]) > 1:
        return f"BLOCK_N={cand['BLOCK_N']} gives {cdiv(z['Nk'], cand['BLOCK_N'])} key blocks: the launcher would take DQ_ATOMIC=True"
    return None


def split_sizes(z: dict, c: dict, name: str) -> dict:
    """z with the query split of this candidate's tiles, as the launchers compute it
    (kernels/self_cross.query_splits): the self x cross forward, and the one-pass attention
    backward where its variant adds dK / dV atomically (DKV_ATOMIC; else no split)."""
    z = dict(z)
    if name == "_self_cross_fwd_kernel":
        programs = cdiv(z["Nk"], c["BLOCK_N"]) * cdiv(z["T"], c["BLOCK_T"]) * z["B"]
    elif name == "_attention_bwd_kernel" and c.get("DKV_ATOMIC"):
        programs = cdiv(z["Nk"], c["BLOCK_N"]) * z["B"] * z["H"]
    else:
        z["m_blocks_per_split"] = cdiv(z["Nq"], c.get("BLOCK_M") or 1)
        return z
    from fasttrack.kernels import self_cross as S
    from fasttrack.kernels._common import sm_count
    sms = sm_count(z["device"])
    m_blocks = cdiv(z["Nq"], c["BLOCK_M"])
    n_split = S.query_splits(programs, m_blocks, sms)
    per = cdiv(m_blocks, n_split)
    z.update(n_split=cdiv(m_blocks, per), m_blocks_per_split=per)
    return z


def base_tensors(spec, z: dict, dtype) -> dict:
    """Realistic inputs of every pointer argument at the largest split (reused by every
    candidate): q, k, v ~ N(0, 1), the true lse of q, k (so that every P = exp(s - L) <= 1),
    cross rows that are probabilities, small gradients."""
    import torch
    from fasttrack.kernels.attention import lse_fwd
    dev = z["device"]
    g = torch.Generator(device="cpu").manual_seed(0)
    t = {}
    for arg, typ in spec.signature.items():
        if not typ.startswith("*"):
            continue
        shp = tensor_shape(arg, dict(z, n_split=1), spec.kernel.__name__)
        if shp is None:
            raise KeyError(f"the sweep knows no shape for pointer argument {arg!r} of {spec.kernel.__name__}")
        x = torch.randn(*shp, generator=g)
        if arg in ("C", "PROBS"):
            x = torch.softmax(x * 2, -1)
        if arg in ("DO", "G", "EXTRA", "DLSE", "DELTA"):
            x = x * 0.1
        t[arg] = x.to(dev, torch.float32 if typ == "*fp32" else dtype)
    if "LSE" in t:
        t["LSE"] = lse_fwd(t["Q"], t["K"], z["D"] ** -0.5)
    return t


def launch_args(spec, z: dict, base: dict, c: dict):
    """(positional args, written tensors) of one launch: fresh copies of the base tensors, the
    written ones filled with NaN; the scalars from z."""
    import torch
    name = spec.kernel.__name__
    scalars = {"scale": z["D"] ** -0.5, "qk_scale": z["D"] ** -0.5 * math.log2(math.e), "H": z["H"], "Nq": z["Nq"], "Nk": z["Nk"], "n_split": z["n_split"],
               "m_blocks_per_split": z["m_blocks_per_split"], "p_scale": 1.0, "extra_scale": 1.0 / z["H"]}
    if "p_scale" in spec.signature:
        from fasttrack.kernels.self_cross import _p_scale
        scalars["p_scale"] = _p_scale(base["C"].dtype, z["H"])
    args, written = [], {}
    for arg in spec.kernel.arg_names:
        if arg in c:
            continue  # a constexpr, passed by keyword
        if arg not in spec.signature:
            raise KeyError(f"{name}: argument {arg!r} is neither in the spec's signature nor a constexpr")
        if spec.signature[arg].startswith("*"):
            if arg == "OUT" and name == "_self_cross_fwd_kernel":
                shp = tensor_shape("OUT", z, name)
                x = torch.empty(shp, device=z["device"], dtype=torch.float32 if z["n_split"] > 1 else base["C"].dtype)
            else:
                x = base[arg].clone()
            if written_arg(name, arg):
                # atomic accumulation targets start at zero, the rest at NaN (unwritten shows)
                x.fill_(0.0 if any(v is True for k, v in c.items() if k.endswith("_ATOMIC")) else float("nan"))
                written[arg] = x
            args.append(x)
        else:
            if arg not in scalars:
                raise KeyError(f"{name}: the sweep knows no value for scalar argument {arg!r}")
            args.append(scalars[arg])
    return args, written


def launch_variant(spec, z: dict, base: dict, cand: dict):
    """Run spec's kernel once with the candidate tiles; returns (written tensors, relaunch fn)."""
    c = dict(spec.constexprs)
    for k in ("BLOCK_M", "BLOCK_N"):
        if cand[k] is not None:
            c[k] = cand[k]
    z = split_sizes(z, c, spec.kernel.__name__)
    grid_rule = GRIDS.get(spec.kernel.__name__)
    if grid_rule is None:
        raise KeyError(f"the sweep has no grid rule for {spec.kernel.__name__}")
    grid = grid_rule(z, c)
    args, written = launch_args(spec, z, base, c)

    def run():
        spec.kernel[grid](*args, **c, num_warps=cand["num_warps"], num_stages=cand["num_stages"])
    run()
    if "OUT" in written:  # the launcher's fixed-order reduction of the split partial sums
        written["OUT"] = written["OUT"].float().sum(0)
    return written, run


def compare(got: dict, want: dict) -> float:
    """Largest |got - want| / max |want| over the written tensors; inf for a NaN or a shape
    that differs."""
    worst = 0.0
    for k, w in want.items():
        g = got.get(k)
        if g is None or g.shape != w.shape:
            return math.inf
        g, w = g.float(), w.float()
        if bool((g.isnan() != w.isnan()).any()):
            return math.inf
        scale = float(w.nan_to_num().abs().max()) or 1.0
        worst = max(worst, float((g - w).nan_to_num().abs().max()) / scale)
    return worst


def sweep_tolerance(dtype) -> float:
    import torch
    return 2e-2 if dtype == torch.float16 else 6e-2


def bench_ms(run, device, smoke: bool) -> float | None:
    if smoke or device.type != "cuda":
        return None
    import triton
    return triton.testing.do_bench(run, warmup=3, rep=15)


def sweep_plan(kernels_regex: str | None, smoke: bool) -> list[tuple]:
    """(spec, shape) pairs, kernels outermost so that a compiled config serves every shape."""
    return [(spec, s) for spec in sweep_variants(kernels_regex, smoke) for s in shapes(smoke)]


def run_sweep(out: Path, deadline: float, smoke: bool, device, kernels_regex: str | None) -> dict:
    """Section sweep (module docstring): {"rows": [...], "best": [...]} in OUT/sweep.json."""
    import torch
    rows = []
    try:
        plan = sweep_plan(kernels_regex, smoke)
    except Exception as e:  # aot_specs itself broke: one error row, the lab goes on
        rows.append({"error": "collecting aot_specs(90): " + error_text(e)})
        plan = []
    for spec, shape in plan:
        name, dname = spec.kernel.__name__, str(spec.dtype).replace("torch.", "")
        head = {"kernel": name, "dtype": dname, "shape": shape.name, "variant": variant_label(spec)}
        z = sweep_sizes(spec, shape, device)
        if not selected_at(spec, z):
            continue
        if out_of_time(deadline, 8.0):
            rows.append(dict(head, skipped="budget: section sweep out of time"))
            continue
        try:
            base = base_tensors(spec, z, spec.dtype)
        except Exception as e:
            rows.append(dict(head, error=error_text(e)))
            continue
        reference = None
        for i, cand in enumerate(candidates(spec, smoke)):
            row = dict(head, config=cand, default=i == 0)
            reason = "budget: section sweep out of time" if out_of_time(deadline, 3.0) else other_variant(spec, z, cand)
            if reason:
                rows.append(dict(row, skipped=reason))
                continue
            try:
                t0 = time.perf_counter()
                written, run = launch_variant(spec, z, base, cand)
                row["first_call_s"] = time.perf_counter() - t0  # compile + run
                if i == 0:  # the default config's outputs; those it leaves unwritten (O of
                    # the lse-only forward) are not compared
                    reference = {k: v for k, v in written.items() if not bool(v.isnan().all())}
                    if not reference:
                        raise RuntimeError("the default config wrote no output")
                row["max_rel_diff"] = compare(written, reference) if reference is not None else None
                row["correct"] = reference is not None and row["max_rel_diff"] <= sweep_tolerance(spec.dtype)
                if row["correct"]:
                    row["ms"] = bench_ms(run, device, smoke)
            except Exception as e:  # a config that does not fit, or changed kernel arguments
                row["error"] = error_text(e)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            print("sweep", json.dumps(row, default=str), flush=True)
        del base
        write_json(out / "sweep.json", {"rows": rows, "best": best_configs(rows)})
    result = {"rows": rows, "best": best_configs(rows)}
    write_json(out / "sweep.json", result)
    return result


def best_configs(rows: list[dict]) -> list[dict]:
    """The fastest correct config per (kernel, dtype, shape, variant), with the default's time
    and the speedup over it (smoke runs have no times: the default is taken)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("correct"):
            groups.setdefault((r["kernel"], r["dtype"], r["shape"], r["variant"]), []).append(r)
    best = []
    for (kernel, dtype, shape, variant), rs in groups.items():
        timed = [r for r in rs if r.get("ms") is not None]
        top = min(timed, key=lambda r: r["ms"]) if timed else next(r for r in rs if r["default"])
        default = next((r for r in rs if r["default"]), None)
        d_ms = default.get("ms") if default else None
        best.append({"kernel": kernel, "dtype": dtype, "shape": shape, "variant": variant,
                     "config": top["config"], "ms": top.get("ms"), "default_config": default and default["config"],
                     "default_ms": d_ms, "speedup": d_ms / top["ms"] if d_ms and top.get("ms") else None})
    return best


# ------------------------------------------------------------------------------ section ncu
def find_ncu() -> str | None:
    path = shutil.which("ncu")
    for cand in ([path] if path else []) + ["/usr/local/cuda/bin/ncu"]:
        if cand and os.path.exists(cand):
            return cand
    return None


def ncu_target(name: str) -> None:
    """Child process under ncu: run target `name`'s op twice at SD-128 float16."""
    import torch
    from fasttrack import ops
    shape = next(s for s in shapes(False) if s.name == NCU_SHAPE)
    x = op_inputs(shape, torch.device("cuda"), torch.float16, backward=name.endswith(("dkdv", "_dk")))
    for _ in range(2):
        if name.startswith("attention"):
            out = ops.attention(x.q, x.k, x.v, backend="triton")[0]
        elif name.startswith("self_cross"):
            out = ops.self_cross(x.q, x.k, x.cross, backend="triton")
        elif name == "cross_attention_probs":
            out = ops.cross_attention(x.q, x.tk, x.tv, backend="triton")[1]
        else:
            out = torch.nn.functional.scaled_dot_product_attention(x.q, x.k, x.v)
        if out.requires_grad:
            out.backward(torch.ones_like(out))
    torch.cuda.synchronize()


def ncu_command(ncu: str, target: str) -> list[str]:
    cmd = [ncu, "--kernel-name", f"regex:{NCU_TARGETS[target]}", "--launch-skip", "1", "--launch-count", "1"]
    for s in NCU_SECTIONS:
        cmd += ["--section", s]
    return cmd + [sys.executable, str(Path(__file__).resolve()), "--ncu-target", target]


def run_ncu(out: Path, deadline: float, smoke: bool, device) -> list[dict]:
    """Section ncu (module docstring): one row per target, the report in OUT/ncu-<target>.txt."""
    ncu = find_ncu()
    if ncu is None:
        return [{"skipped": "ncu (Nsight Compute) not found on PATH or in /usr/local/cuda/bin"}]
    if smoke or device.type != "cuda":
        return [{"skipped": f"no GPU to profile (--smoke); ncu is {ncu}"}]
    rows = []
    for target in NCU_TARGETS:
        row = {"target": target, "shape": NCU_SHAPE, "kernel_regex": NCU_TARGETS[target]}
        left = deadline - time.monotonic()
        if left < 30:
            rows.append(dict(row, skipped="budget: section ncu out of time"))
            continue
        log = out / f"ncu-{target}.txt"
        t0 = time.monotonic()
        try:
            p = subprocess.run(ncu_command(ncu, target), capture_output=True, text=True, timeout=min(150, left - 5),
                               cwd=ROOT)
            log.write_text(p.stdout + "\n# stderr\n" + p.stderr[-4000:])
            row.update(rc=p.returncode, file=log.name, profiled="==PROF==" in p.stdout or "Section:" in p.stdout)
        except subprocess.TimeoutExpired:
            row["error"] = "timeout"
        row["seconds"] = round(time.monotonic() - t0, 1)
        rows.append(row)
        write_json(out / "ncu.json", rows)
        print("ncu", json.dumps(row), flush=True)
    return rows


# ------------------------------------------------------------------------------ section trackers
def tracker_plan(smoke: bool) -> list[dict]:
    """The variants of section trackers, in order: tracker, targets, patched, and the frames."""
    out = []
    for name, k in TRACKER_PLAN:
        warmup, timed, profiled, need = SMOKE_TRACKER_FRAMES if smoke else TRACKER_FRAMES[name]
        for patched in (True, False):
            out.append({"tracker": name, "targets": k, "patched": patched, "warmup": warmup,
                        "timed": timed, "profiled": profiled, "need_s": need})
    return out


def _slug(v: dict) -> str:
    return f"{v['tracker']}-x{v['targets']}-{'patched' if v['patched'] else 'unpatched'}"


def build_tracker(name: str, patched: bool, device, smoke: bool, warmup: int, components):
    """The lab's tracker: tiny models with --smoke, else the GPU models of the module docstring.
    components() gives the shared SD 2.1 components (built once)."""
    import torch
    from fasttrack.patch import patch, unpatch
    backend = "torch" if smoke else "auto"  # smoke runs under TRITON_INTERPRET=1
    if name in ("DiffTracker", "DINTR"):
        from fasttrack.bench.trackers import build
        tracker = "diff_tracker" if name == "DiffTracker" else "dintr"
        if tracker == "diff_tracker":  # the paper's full frame: the online prompt updater on
            settings = {"update_from": warmup, "use_updater": True, **({"prompt_steps": 2} if smoke else {})}
        else:  # smoke: the plumbing only, the fewest steps
            settings = {"num_steps": 2, "init_steps": 2} if smoke else {}
        dtype = torch.float32 if smoke else torch.float16
        return build(tracker, "tiny" if smoke else "sd2.1", device, dtype=dtype, patched=patched, backend=backend,
                     quick=True, components=None if smoke else components(), **settings)
    if name == "DeTrack":
        from fasttrack.trackers.detrack.tracker import DeTrack
        tr = (DeTrack.tiny(0) if smoke else DeTrack.detrack256(seed=0)).to(device).eval()
    else:
        from fasttrack.trackers.dmtrack import DMTrack
        tr = (DMTrack.tiny(0) if smoke else DMTrack.dmtrack256(seed=0)).to(device).eval()
        with torch.no_grad():
            tr.net.cross.gate.fill_(0.5)  # an open gate (as the bench): random init leaves it shut
    unpatch(tr)
    return patch(tr, backend=backend) if patched else tr


def tracker_frames(n: int, size, targets: int):
    """n synthetic frames, `targets` init boxes and the sequence's description."""
    from fasttrack.bench.trackers import frames_and_boxes
    from fasttrack.data.synthetic import synthetic_sequence
    frames, boxes = frames_and_boxes(n, size, targets)
    H, W = size
    text = synthetic_sequence(1, size=size, sprite_size=(H // 4, W // 4), seed=0).text
    return frames, boxes, text


def _attr(e, *names):
    for n in names:
        v = getattr(e, n, None)
        if v is not None:
            return v
    return 0.0


def profile_summary(prof, frames: int, cuda: bool) -> dict:
    """Per frame: host (CPU) op time, device (CUDA) time, launches and kernels; the top-10 ops
    by self device time (CPU: by self CPU time)."""
    import torch
    DT = torch.autograd.DeviceType
    events = prof.events()
    host_us = sum(e.self_cpu_time_total for e in events if e.device_type == DT.CPU)
    dev = [e for e in events if e.device_type == DT.CUDA]
    launches = sum(1 for e in events if e.device_type == DT.CPU and LAUNCH_RE.match(e.name))
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    avgs = sorted(prof.key_averages(), key=lambda a: _attr(a, key, "self_cuda_time_total"), reverse=True)
    top = [{"name": a.key, "calls": a.count,
            "self_device_ms": _attr(a, "self_device_time_total", "self_cuda_time_total") / 1e3 if cuda else None,
            "device_ms": _attr(a, "device_time_total", "cuda_time_total") / 1e3 if cuda else None,
            "self_cpu_ms": a.self_cpu_time_total / 1e3, "cpu_ms": a.cpu_time_total / 1e3}
           for a in avgs[:10]]
    return {"host_op_ms_per_frame": host_us / frames / 1e3,
            "device_ms_per_frame": sum(e.time_range.elapsed_us() for e in dev) / frames / 1e3 if cuda else None,
            "device_kernels_per_frame": len(dev) / frames if cuda else None,
            "launches_per_frame": launches / frames if cuda else None,
            "top_ops": top}


def save_trace(prof, out: Path, slug: str) -> dict:
    """The chrome trace, gzipped, kept when under TRACE_LIMIT_MB."""
    import gzip
    raw, gz = out / f"trace-{slug}.json", out / f"trace-{slug}.json.gz"
    try:
        prof.export_chrome_trace(str(raw))
        with open(raw, "rb") as f, gzip.open(gz, "wb", compresslevel=6) as g:
            shutil.copyfileobj(f, g)
        mb = gz.stat().st_size / 2**20
        if mb > TRACE_LIMIT_MB:
            gz.unlink()
            return {"trace": None, "trace_note": f"dropped: {mb:.1f} MB gzipped > {TRACE_LIMIT_MB} MB"}
        return {"trace": gz.name, "trace_mb": round(mb, 2)}
    except Exception as e:
        return {"trace": None, "trace_note": "export failed: " + error_text(e)}
    finally:
        raw.unlink(missing_ok=True)


def run_tracker_variant(v: dict, out: Path, device, smoke: bool, components) -> dict:
    """One variant of section trackers (module docstring); raises on failure."""
    import itertools

    import torch
    from torch.profiler import ProfilerActivity, profile

    from fasttrack.trackers.watch import frame_profile
    cuda = device.type == "cuda"
    size = SMOKE_TRACKER_SIZE if smoke else TRACKER_SIZE
    row = {}
    t0 = time.perf_counter()
    tr = build_tracker(v["tracker"], v["patched"], device, smoke, v["warmup"], components)
    row["build_s"] = time.perf_counter() - t0
    frames, boxes, text = tracker_frames(8, size, v["targets"])
    cycle = itertools.cycle(frames[1:])
    step = lambda: tr.update_batch(next(cycle))  # noqa: E731
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    if v["tracker"] == "DMTrack":
        tr.init_batch(frames[0], boxes, text=text)
    else:
        tr.init_batch(frames[0], boxes)
    sync(device)
    row["init_s"] = time.perf_counter() - t0
    for i in range(v["warmup"]):
        t0 = time.perf_counter()
        step()
        sync(device)
        if i == 0:
            row["first_frame_s"] = time.perf_counter() - t0  # compiles, CUDA graph capture
    ms = wall_ms(step, device, v["timed"])
    row.update(ms_per_frame=ms, frames_per_s=1e3 / ms)
    if v["targets"] > 1:
        row["target_frames_per_s"] = 1e3 * v["targets"] / ms
    w = frame_profile(tr, [next(cycle)])
    row.update(ops_per_frame=int(w["ops_per_frame"]), host_reads=int(w["reads_per_frame"]),
               host_writes=int(w["writes_per_frame"]), host_ms_under_watch=w["host_ms_per_frame"])
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync(device)
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(v["profiled"]):
            step()
        sync(device)
        row["profiled_wall_ms_per_frame"] = (time.perf_counter() - t0) * 1e3 / v["profiled"]
    row.update(profile_summary(prof, v["profiled"], cuda))
    try:
        (out / f"trackers-{_slug(v)}.txt").write_text(prof.key_averages().table(
            sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=25))
        row["table"] = f"trackers-{_slug(v)}.txt"
    except Exception as e:
        row["table_note"] = error_text(e)
    row.update(save_trace(prof, out, _slug(v)))
    if cuda:
        row["peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def run_trackers(out: Path, deadline: float, smoke: bool, device) -> list[dict]:
    """Section trackers (module docstring): one row per (tracker, targets, patched)."""
    import functools
    import gc

    import torch
    size = SMOKE_TRACKER_SIZE if smoke else TRACKER_SIZE
    dtype = torch.float32 if smoke else torch.float16

    @functools.cache
    def components():  # the SD 2.1 architecture, built once for Diff-Tracker and DINTR
        from fasttrack.trackers.diffusion.sd import random_components
        return random_components("sd2.1", seed=0, device=device, dtype=dtype)

    rows = []
    for v in tracker_plan(smoke):
        row = {"tracker": v["tracker"], "targets": v["targets"],
               "impl": "patched" if v["patched"] else "unpatched",
               "model": "tiny" if smoke else TRACKER_MODELS[v["tracker"]],
               "frame": f"{size[0]}x{size[1]}", "warmup": v["warmup"], "timed": v["timed"],
               "profiled": v["profiled"]}
        if out_of_time(deadline, v["need_s"]):
            row["skipped"] = f"budget: section trackers out of time (a {v['tracker']} variant needs ~{v['need_s']:.0f} s)"
        else:
            t0 = time.monotonic()
            try:
                row.update(run_tracker_variant(v, out, device, smoke, components))
            except Exception as e:  # one tracker failing must not stop the others
                row["error"] = error_text(e, 1000)
            row["seconds"] = round(time.monotonic() - t0, 1)
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print("trackers", json.dumps({k: v for k, v in row.items() if k != "top_ops"}, default=str), flush=True)
        write_json(out / "trackers.json", rows)  # partial results survive a kill
    return rows


# ------------------------------------------------------------------------------ section shared
def run_shared(out: Path, deadline: float, smoke: bool, path: str | None) -> list[dict]:
    """Section shared: the reviewer's script as it is, with what is left of this section."""
    if not path:
        return [{"skipped": "no --shared-lab PATH given"}]
    script = Path(path)
    if not script.is_file():
        return [{"skipped": f"--shared-lab {path}: no such file"}]
    if smoke:
        return [{"skipped": "--smoke: the shared lab runs on a GPU only", "script": str(script)}]
    left = deadline - time.monotonic()
    if left < 45:
        return [{"skipped": "budget: section shared out of time", "script": str(script)}]
    dest = out / "shared-lab"
    cmd = [sys.executable, str(script), "--out", str(dest), "--budget", str(int(left - 30))]
    row = {"script": str(script), "command": " ".join(cmd)}
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=left - 5, cwd=ROOT)
        (out / "shared-lab.log").write_text(p.stdout + "\n# stderr\n" + p.stderr)
        row.update(rc=p.returncode, log="shared-lab.log", tail=(p.stdout + p.stderr)[-1500:])
    except subprocess.TimeoutExpired as e:
        (out / "shared-lab.log").write_text(str(e.stdout or "") + "\n# stderr\n" + str(e.stderr or ""))
        row["error"] = f"timeout after {int(left - 5)} s"
    row["seconds"] = round(time.monotonic() - t0, 1)
    row["files"] = sorted(str(f.relative_to(out)) for f in dest.rglob("*") if f.is_file()) if dest.exists() else []
    return [row]


# ------------------------------------------------------------------------------ dry run and main
def dry_run(args) -> None:
    """Print every section with what it would run; needs no GPU."""
    print(f"gpu_lab.py --dry-run: budget {args.budget:.0f} s, output {args.out}, sections {','.join(args.sections)}")
    for name in args.sections:
        print(f"\n== section {name}")
        if name == "ops":
            for s in shapes(False):
                print(f"  shape {s.name}: (B, H, N, D) = ({s.B}, {s.H}, {s.N}, {s.D}), T = {s.T}")
            print(f"  dtypes {', '.join(DTYPES)}; passes {', '.join(PASSES)}")
            for op in OPS:
                print(f"  {op}: {', '.join(_dry_impls(op))}")
            print(f"  FlexAttention: {FLEX_WHERE}")
        elif name == "sweep":
            specs = sweep_variants(args.kernels, smoke=False)
            print(f"  {len(specs)} variants from aot_specs(90) x shapes {', '.join(s.name for s in shapes(False))}")
            for spec in specs:
                cands = candidates(spec, smoke=False)
                print(f"  {spec.kernel.__name__} {str(spec.dtype).replace('torch.', '')} [{variant_label(spec)}]: "
                      + "; ".join(_cfg(c) + (" (default)" if i == 0 else "") for i, c in enumerate(cands)))
        elif name == "ncu":
            print(f"  ncu: {find_ncu() or 'not found here (skipped on such a machine)'}; sections {', '.join(NCU_SECTIONS)}")
            for t, rx in NCU_TARGETS.items():
                print(f"  {t} at {NCU_SHAPE}: --kernel-name regex:{rx} --launch-skip 1 --launch-count 1")
        elif name == "trackers":
            h, w = TRACKER_SIZE
            for v in tracker_plan(False):
                print(f"  {v['tracker']} x{v['targets']} {'patched' if v['patched'] else 'unpatched'}: "
                      f"{TRACKER_MODELS[v['tracker']]}, {h}x{w} frames; {v['warmup']} warm-up, "
                      f"{v['timed']} timed, {v['profiled']} profiled frames; FrameWatch counts; "
                      f"trace OUT/trace-{_slug(v)}.json.gz (<= {TRACE_LIMIT_MB:.0f} MB)")
        elif name == "shared":
            print(f"  {('python ' + args.shared_lab + ' --out ' + str(Path(args.out) / 'shared-lab')) if args.shared_lab else 'skipped: no --shared-lab PATH given'}")
    print("\nthen lab.json (device, capability, versions, git commit, sections)")


def _dry_impls(op: str) -> list[str]:
    names = {"attention": ["fasttrack triton (+lse)", "sdpa", "aten flash (+lse)", "aten efficient (+lse)",
                           "aten cudnn (+lse)", "flex compiled (+lse)", "flash-attn (when importable)",
                           "xformers (when importable)"],
             "self_cross": ["fasttrack triton", "fasttrack triton (lse given)", "eager (materialized maps)", "sdpa"],
             "cross_attention": ["fasttrack triton (+probs)", "eager softmax + head mean", "sdpa"]}
    return names[op]


def _cfg(c: dict) -> str:
    return f"M{c['BLOCK_M']} N{c['BLOCK_N']} w{c['num_warps']} s{c['num_stages']}"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python scripts/gpu_lab.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu-lab-out", help="output folder (default: %(default)s)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds for the whole lab (default: %(default)s)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ",".join(SECTIONS))
    p.add_argument("--shared-lab", default=None, help="the reviewer's gpu_lab.py to run as section shared")
    p.add_argument("--kernels", default=None, help="regex on the kernel names the sweep runs (default: all)")
    p.add_argument("--dry-run", action="store_true", help="print the plan; needs no GPU")
    p.add_argument("--smoke", action="store_true", help="TRITON_INTERPRET=1, tiny CPU shapes: the plumbing only")
    p.add_argument("--ncu-target", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"--sections: unknown {bad}; choose from {','.join(SECTIONS)}")
    if args.budget <= 0:
        p.error("--budget must be > 0")
    if args.smoke and args.kernels is None:
        args.kernels = SMOKE_KERNELS
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before the first @triton.jit is evaluated
    elif not args.dry_run:
        os.environ.pop("TRITON_INTERPRET", None)
    import torch
    if not (args.dry_run or args.smoke or args.ncu_target) and not torch.cuda.is_available():
        print(f"gpu_lab.py: no CUDA GPU (torch {torch.__version__}, torch.version.cuda = {torch.version.cuda}); "
              "use --dry-run or --smoke without one", file=sys.stderr)
        return 2
    import_fasttrack()
    if args.ncu_target:
        ncu_target(args.ncu_target)
        return 0
    if args.dry_run:
        dry_run(args)
        return 0
    return run_lab(args)


def run_lab(args) -> int:
    """Run the selected sections within the budget; lab.json at the end."""
    import torch
    budget = Budget(args.budget)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cpu" if args.smoke else "cuda")
    lab = {"env": environment(args.smoke), "budget_s": args.budget, "sections": {}}
    write_json(out / "lab.json", lab)
    for i, name in enumerate(args.sections):
        later = args.sections[i + 1:]
        t0 = time.monotonic()
        info = {"file": f"{name}.json"}
        if budget.left() < 10:
            rows = [{"skipped": "budget: the lab's budget is spent"}]
        else:
            deadline = budget.section_deadline(name, later)
            try:
                rows = run_section(name, out, deadline, args, device)
            except Exception as e:  # one broken section must not cost the others
                rows = [{"error": error_text(e, 1000)}]
        write_json(out / f"{name}.json", rows)
        flat = rows["rows"] if isinstance(rows, dict) else rows
        info.update(seconds=round(time.monotonic() - t0, 1), rows=len(flat),
                    errors=sum(1 for r in flat if "error" in r), skipped=sum(1 for r in flat if "skipped" in r),
                    status="skipped" if flat and all("skipped" in r for r in flat) else "ran")
        lab["sections"][name] = info
        write_json(out / "lab.json", lab)
        print(f"== {name}: {info}", flush=True)
    lab["seconds"] = round(time.monotonic() - budget.start, 1)
    write_json(out / "lab.json", lab)
    print(f"gpu_lab.py: {lab['seconds']} s, results in {out}")
    return 0


def run_section(name: str, out: Path, deadline: float, args, device):
    if name == "ops":
        return run_ops(out, deadline, args.smoke, device)
    if name == "sweep":
        return run_sweep(out, deadline, args.smoke, device, args.kernels)
    if name == "ncu":
        return run_ncu(out, deadline, args.smoke, device)
    if name == "trackers":
        return run_trackers(out, deadline, args.smoke, device)
    return run_shared(out, deadline, args.smoke, args.shared_lab)


if __name__ == "__main__":
    sys.exit(main())
