"""`fasttrack bench`: time and measure fasttrack against eager PyTorch on this device.

Runs each section of fasttrack.bench (ops, recorder, detrack, trackers) on the device present
(CUDA if any, else CPU), prints a table per section and writes every row as JSON, with a
markdown / HTML report and a chart beside it. A section whose optional package is missing
becomes a row that says so; a failing section is recorded and the others still run (exit 1).
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time

__all__ = ["register", "run", "SECTIONS", "format_table", "add_ratios"]

# Bench sections: name -> (module, description). Each module exposes run(device, quick) -> rows.
SECTIONS = {
    "ops": ("fasttrack.bench.ops", "attention-map ops: eager reference vs fasttrack backends"),
    "recorder": ("fasttrack.bench.recorder", "diffusers UNet step with map recording"),
    "detrack": ("fasttrack.bench.detrack", "DeTrack per-frame step"),
    "trackers": ("fasttrack.bench.trackers", "Diff-Tracker and DINTR per frame"),
}


def _available_sections() -> list[str]:
    out = []
    for name, (mod, _) in SECTIONS.items():
        if importlib.util.find_spec(mod) is not None:
            out.append(name)
    return out


def _fmt(x, nd=1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        if x != 0 and abs(x) < 10 ** -nd:  # an error of 3e-7 must not read as 0.0
            return f"{x:.1e}"
        return f"{x:.{nd}f}"
    return str(x)


def format_table(rows: list[dict]) -> str:
    """A fixed-width table of bench rows; columns are the union of the rows' keys in a
    readable order, with the measurement columns last."""
    if not rows:
        return "(no rows)"
    lead = ["section", "shape", "op", "impl", "pass", "name"]
    tail = ["ms", "tflops", "peak_mb", "speedup", "mem_ratio"]
    keys = [k for k in lead if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r} - set(lead) - set(tail) - {"dtype", "device", "error"})
    keys += [k for k in tail if any(k in r for r in rows)]
    cells = [[_fmt(r.get(k), 3 if k == "tflops" else 1) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
    return "\n".join(out)


def add_ratios(rows: list[dict]) -> None:
    """speedup and mem_ratio of each ops row against the reference row of the same case."""
    refs = {(r["shape"], r["op"], r["pass"]): r for r in rows
            if r.get("section") == "ops" and r.get("impl") == "reference"}
    for r in rows:
        ref = refs.get((r.get("shape"), r.get("op"), r.get("pass")))
        if ref is None or r is ref:
            continue
        if ref.get("ms") and r.get("ms") and not math.isnan(ref["ms"]):
            r["speedup"] = ref["ms"] / r["ms"]
        if ref.get("peak_mb") and r.get("peak_mb") and ref["peak_mb"] > 0:
            r["mem_ratio"] = r["peak_mb"] / ref["peak_mb"]


def run(args) -> int:
    import torch

    from ..bench.facts import device_facts

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    available = _available_sections()
    wanted = args.sections.split(",") if args.sections else available
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"unknown section(s) {unknown}; choose from {available}", file=sys.stderr)
        return 2
    facts = device_facts(device)
    print(f"fasttrack bench on {facts['device_name']} ({device}), torch {facts['torch']}, "
          f"triton {facts['triton']}, CUDA extension: {facts['has_cuda_ext']}")
    rows, failed, t0 = [], [], time.perf_counter()
    for name in wanted:
        mod, desc = SECTIONS[name]
        print(f"\n[{name}] {desc}", flush=True)
        t = time.perf_counter()
        try:
            section_rows = importlib.import_module(mod).run(device, quick=args.quick)
        except ImportError as e:
            # An optional dependency (diffusers for the recorder and the diffusion trackers)
            # is missing: the section is skipped with the reason, the other sections still run.
            section_rows = [{"name": name, "note": f"skipped: {type(e).__name__}: {e}"}]
        except Exception as e:  # a failing section is a result too: record it, run the rest
            failed.append(name)
            msg = (str(e).splitlines() or [""])[0][:200]
            section_rows = [{"name": name, "note": f"failed: {type(e).__name__}: {msg}",
                             "error": f"{type(e).__name__}: {e}"}]
        for r in section_rows:
            r.setdefault("section", name)
        add_ratios(section_rows)
        print(format_table(section_rows))
        for r in section_rows:  # the table leaves the (long) error column out
            if r.get("error"):
                what = " ".join(str(r[k]) for k in ("shape", "op", "impl", "pass", "name") if r.get(k))
                print(f"  error in {what}: {r['error']}")
        print(f"({time.perf_counter() - t:.1f} s)", flush=True)
        rows += section_rows
    result = {"facts": facts, "quick": args.quick, "seconds": time.perf_counter() - t0, "rows": rows,
              "failed_sections": failed}
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    from ..bench.report import write_report
    stem = args.out[:-5] if args.out.endswith(".json") else args.out
    written = write_report(json.loads(json.dumps(result, default=str)), stem)
    print(f"\nwrote {args.out} ({len(rows)} rows, {result['seconds']:.0f} s) and "
          + ", ".join(str(p) for p in written))
    if not any(str(p).endswith(".png") for p in written):
        print("(no speed chart: matplotlib is not installed; pip install fasttrack[plot])")
    if failed:
        print(f"bench sections that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def register(sub) -> argparse.ArgumentParser:
    """Add the `bench` subcommand to the subparsers `sub`."""
    b = sub.add_parser("bench", help="time and measure fasttrack against eager PyTorch on this device",
                       description="Runs each bench section on the device present (CUDA if any, else CPU), "
                                   "prints a table per section and writes every row as JSON.")
    b.add_argument("--quick", action="store_true", help="small shapes only (a smoke run)")
    b.add_argument("--sections", default=None,
                   help="comma-separated subset of: " + ", ".join(f"{k} ({v[1]})" for k, v in SECTIONS.items()))
    b.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    b.add_argument("--out", default="fasttrack-bench.json", help="JSON output path (default: %(default)s)")
    b.set_defaults(func=run)
    return b
