"""Ahead-of-time compile report: the project's performance instrument without a GPU.

Compiles every Triton kernel variant the launchers can select for one GPU architecture with
``triton.compile`` and a ``GPUTarget`` (no device needed: Triton ships ptxas), and reads from
the result what decides a kernel's speed before it ever runs:

- registers per thread and spill bytes (ptxas ``-v``: "Used N registers", "N bytes spill
  stores"; cuobjdump's REG / LOCAL when the log is not available);
- shared memory per program (Triton's metadata: pipelining buffers and layout conversions);
- the matrix instruction every ``tl.dot`` lowered to: "wgmma" (Hopper warpgroup MMA, async,
  operands from shared memory), "mma.sync" (Ampere-style warp MMA; on sm_90 it runs at roughly
  half of wgmma's rate), or "fma" (no tensor core: fp32 "ieee" dots, broadcast-sums);
- whether global loads became cp.async (asynchronous copies that software pipelining needs).

The variants come from each kernel module's ``aot_specs(arch)`` (kernels/_common.KernelSpec),
built from the same config functions the launchers call, so the report compiles what a GPU run
would. Pointers are compiled as 16-byte aligned, as torch allocations are.

    python -m fasttrack.kernels.compile_report --arch 90 --json report.json
    python -m fasttrack.kernels.compile_report --arch 80 --kernels self_cross --dtypes float16

JSON: a list of objects with the keys kernel, dtype, config, registers, spill_bytes,
shared_bytes, mma, uses_dot, cp_async, error. Exit status 1 when any variant failed to compile.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch

from ._common import KernelSpec

ARCHS = (80, 86, 89, 90)
KEYS = ("kernel", "dtype", "config", "registers", "spill_bytes", "shared_bytes", "mma",
        "uses_dot", "cp_async", "error")
DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


def collect(arch: int) -> list[KernelSpec]:
    """Every variant the launchers select on compute capability `arch` (e.g. 90 for H100)."""
    from . import attention, box_branch, cross_attention, self_cross
    specs: list[KernelSpec] = []
    for mod in (attention, self_cross, cross_attention, box_branch):
        specs.extend(mod.aot_specs(arch))
    return specs


def _tool(name: str) -> str | None:
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.path.exists(path) else shutil.which(name)


def _resource_usage(cubin: bytes) -> dict[str, int]:
    """REG / LOCAL / SHARED of the cubin's kernel, from cuobjdump --dump-resource-usage."""
    tool = _tool("cuobjdump")
    if tool is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True,
                             text=True, check=False).stdout
    return {k: int(v) for k, v in re.findall(r"\b(REG|LOCAL|SHARED|STACK):(\d+)", out)}


def _mma(ptx: str, uses_dot: bool) -> str | None:
    if "wgmma" in ptx:
        return "wgmma"
    if "mma.sync" in ptx:
        return "mma.sync"
    return "fma" if uses_dot else None


def compile_spec(spec: KernelSpec, arch: int) -> dict:
    """Compile one variant for `arch`; a report row (KEYS). Never raises for a compile error:
    the message goes into the row's "error"."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = spec.kernel
    config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
              for k, v in spec.constexprs.items()}
    config.update(num_warps=spec.num_warps, num_stages=spec.num_stages)
    if spec.label:
        config["variant"] = spec.label
    row = dict(kernel=fn.__name__, dtype=DTYPE_NAMES.get(spec.dtype, str(spec.dtype)),
               config=config, registers=None, spill_bytes=None, shared_bytes=None, mma=None,
               uses_dot=None, cp_async=None, error=None)
    signature = {}
    for name in fn.arg_names:
        if name in spec.constexprs:
            signature[name] = "constexpr"
        elif name in spec.signature:
            signature[name] = spec.signature[name]
        else:
            row["error"] = f"aot spec names no type for argument {name!r}"
            return row
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if str(signature[name]).startswith("*")}
    src = ASTSource(fn=fn, signature=signature, constexprs=dict(spec.constexprs), attrs=attrs)
    knobs = triton.knobs
    log = io.StringIO()
    try:
        # A cache hit would skip ptxas and its -v log: compile every time, log on stdout.
        with knobs.compilation.scope(), knobs.nvidia.scope():
            knobs.compilation.always_compile = True
            knobs.nvidia.dump_ptxas_log = True
            with contextlib.redirect_stdout(log):
                c = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                   options=dict(num_warps=spec.num_warps,
                                                num_stages=spec.num_stages))
    except Exception as e:  # a compile failure is a report row, not a crash
        msg = str(e).strip().splitlines()
        row["error"] = f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]
        return row
    ptx, text = c.asm["ptx"], log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores", text)
    usage = _resource_usage(c.asm["cubin"]) if regs is None or spill is None else {}
    row["registers"] = int(regs.group(1)) if regs else usage.get("REG")
    row["spill_bytes"] = int(spill.group(1)) if spill else usage.get("LOCAL")
    row["shared_bytes"] = int(c.metadata.shared)
    row["uses_dot"] = "tt.dot" in c.asm["ttir"]
    row["mma"] = _mma(ptx, row["uses_dot"])
    row["cp_async"] = "cp.async" in ptx
    return row


_SPECS: dict[int, list[KernelSpec]] = {}


def _compile_index(arch: int, index: int) -> dict:
    """Worker: compile variant `index` of collect(arch) (specs hold jit functions, which do
    not pickle, so each worker process rebuilds the list once)."""
    if arch not in _SPECS:
        _SPECS[arch] = collect(arch)
    return compile_spec(_SPECS[arch][index], arch)


def run(arch: int, kernels: str | None = None, dtypes: list[str] | None = None,
        jobs: int = 1, progress: bool = True) -> list[dict]:
    """Rows for every collected variant whose kernel name matches the regex `kernels` and
    whose dtype is in `dtypes` (names as in DTYPE_NAMES), compiled for `arch` by `jobs`
    processes (ptxas is single-threaded; one variant takes 0.5-3 s). Rows keep collect()'s
    order whatever the number of jobs."""
    specs = collect(arch)
    chosen = [i for i, s in enumerate(specs)
              if (not kernels or re.search(kernels, s.kernel.__name__))
              and (not dtypes or DTYPE_NAMES.get(s.dtype) in dtypes)]
    bar = _progress(len(chosen), arch) if progress else None
    rows: dict[int, dict] = {}
    if jobs <= 1:
        for i in chosen:
            rows[i] = compile_spec(specs[i], arch)
            if bar is not None:
                bar.update(1)
    else:
        import concurrent.futures as cf
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")  # no forked CUDA/Triton state
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_compile_index, arch, i): i for i in chosen}
            for fut in cf.as_completed(futures):
                rows[futures[fut]] = fut.result()
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return [rows[i] for i in chosen]


def _progress(total: int, arch: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=f"compiling for sm_{arch}", unit="kernel", file=sys.stderr)


def problems(rows: list[dict]) -> list[str]:
    """What the report must not show: compile errors, spills, and 16-bit dot kernels whose
    dots missed wgmma on sm_90 (the CI check and gpu_check.sh's summary read this)."""
    out = []
    for r in rows:
        where = f"{r['kernel']} {r['dtype']} {r['config'].get('variant', '')}".strip()
        if r["error"]:
            out.append(f"{where}: compile error: {r['error']}")
            continue
        if r["spill_bytes"]:
            out.append(f"{where}: {r['spill_bytes']} bytes of spill stores")
    return out


def wgmma_problems(rows: list[dict]) -> list[str]:
    """16-bit kernels with dots that did not land on wgmma (meaningful for sm_90 rows only)."""
    return [f"{r['kernel']} {r['dtype']} {r['config'].get('variant', '')}: dots on {r['mma']}"
            for r in rows if not r["error"] and r["uses_dot"] and r["dtype"] != "float32"
            and r["mma"] != "wgmma"]


def format_table(rows: list[dict]) -> str:
    head = ("kernel", "dtype", "variant", "tiles", "warps", "stages", "regs", "spill", "smem",
            "mma", "cp.async", "error")
    lines = []
    for r in rows:
        cfg = r["config"]
        tiles = " ".join(f"{k[6:]}{v}" for k, v in cfg.items() if k.startswith("BLOCK_"))
        lines.append((r["kernel"], r["dtype"], str(cfg.get("variant", "")), tiles,
                      str(cfg["num_warps"]), str(cfg["num_stages"]), str(r["registers"]),
                      str(r["spill_bytes"]), str(r["shared_bytes"]), str(r["mma"]),
                      str(r["cp_async"]), (r["error"] or "")[:60]))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*l) for l in lines])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fasttrack.kernels.compile_report",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, choices=ARCHS,
                   help="compute capability to compile for, major*10+minor (default: 90)")
    p.add_argument("--json", default=None, help="write the rows to this JSON file")
    p.add_argument("--kernels", default=None, help="regex on kernel names (default: all)")
    p.add_argument("--dtypes", default=None,
                   help="comma-separated subset of float16,bfloat16,float32 (default: all)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1) // 2),
                   help="compiler processes (default: half the CPUs, %(default)s here)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    dtypes = None
    if args.dtypes:
        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        bad = [d for d in dtypes if d not in DTYPE_NAMES.values()]
        if bad:
            p.error(f"--dtypes: unknown {bad}; choose from {sorted(DTYPE_NAMES.values())}")
    start = time.perf_counter()
    rows = run(args.arch, args.kernels, dtypes, jobs=args.jobs)
    print(format_table(rows))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    bad = problems(rows) + (wgmma_problems(rows) if args.arch == 90 else [])
    errors = sum(1 for r in rows if r["error"])
    print(f"\n{len(rows)} variants for sm_{args.arch} in {time.perf_counter() - start:.0f} s: "
          f"{errors} compile errors, {sum(1 for r in rows if r['spill_bytes'])} spilling"
          + (f", {len(wgmma_problems(rows))} 16-bit dot kernels off wgmma" if args.arch == 90 else ""))
    for line in bad:
        print("  " + line)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
