"""`fasttrack bench`: time and measure fasttrack against eager PyTorch on this device.

Runs the cases of each section of fasttrack.bench (ops, recorder, detrack, dmtrack, trackers)
through the harness (fasttrack/bench/harness.py) on the device present (CUDA if any, else CPU),
prints a table per section and writes DIR/bench.json (every row, the machine's facts) with a markdown /
HTML report and a chart beside it (DIR/bench.md, .html, .png). A section whose optional package
is missing becomes a row that says so; a failing section, or a case that fails for another
reason than memory, is recorded and the rest still runs (exit status 1).

By default every section runs its small cases (`cases(device, quick=True)`): the whole command
takes minutes on a 2-core CPU. `--full` runs each section's full matrix (`quick=False`: more
shapes, targets and repeats, torch.compile on the CPU; far longer there). `--quick` is the
default and is still accepted. Each section shows a progress bar on stderr (tqdm), one step per
case, the running case beside it.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

__all__ = ["register", "run", "SECTIONS"]

# Bench sections: name -> (module, description). Each module exposes cases(device, quick):
# quick=True the small cases (the default run), quick=False the full matrix (--full).
SECTIONS = {
    "host": ("fasttrack.bench.host", "host cost per op call beside one SDPA call (device launch excluded)"),
    "ops": ("fasttrack.bench.ops", "attention-map ops: eager reference vs fasttrack backends"),
    "recorder": ("fasttrack.bench.recorder", "diffusers UNet step with map recording"),
    "detrack": ("fasttrack.bench.detrack", "DeTrack per-frame step"),
    "dmtrack": ("fasttrack.bench.dmtrack", "DMTrack per-frame step against K mask samplings"),
    "trackers": ("fasttrack.bench.trackers", "Diff-Tracker and DINTR per frame"),
}


def _section_rows(name: str, device, quick: bool) -> tuple[list[dict], bool]:
    """(rows of section `name`, whether the section itself failed)."""
    from ..bench.harness import run_cases
    from ..bench.report import cell, row_label

    from tqdm import tqdm

    bar = None

    def start(case):
        bar.set_postfix_str(case.id, refresh=True)

    def progress(row):
        got = row.get("error") or row.get("note") or (
            f"{cell(row.get('ms'))} ms per {row.get('unit')}, {cell(row.get('peak_allocated_mb'))} MB"
            if "ms" in row else
            f"{cell(row.get('us_per_call'))} us per call, {cell(row.get('x_sdpa'))} x SDPA"
            if "us_per_call" in row else "")
        # tqdm.write clears the bar (stderr) around the line (stdout), then redraws it
        tqdm.write(f"  {row_label(row)}: {got}", file=sys.stdout)
        bar.update(1)

    try:
        cases = importlib.import_module(SECTIONS[name][0]).cases(device, quick=quick)
        bar = tqdm(total=len(cases), desc=f"[{name}]", unit="case", file=sys.stderr,
                   dynamic_ncols=True, leave=True)
        with bar:
            return run_cases(cases, device, start=start, progress=progress), False
    except ImportError as e:
        # An optional dependency (diffusers for the recorder and the diffusion trackers) is
        # missing: the section is skipped with the reason, the other sections still run.
        return [{"section": name, "name": name, "note": f"skipped: {type(e).__name__}: {e}"}], False
    except Exception as e:  # a failing section is a result too: record it, run the rest
        msg = (str(e).splitlines() or [""])[0][:200]
        return [{"section": name, "name": name, "note": f"failed: {type(e).__name__}: {msg}",
                 "error": f"{type(e).__name__}: {e}"}], True


def run(args) -> int:
    from ..bench.facts import device_facts
    from ..bench.report import row_label, text_table, write_report
    from .common import default_device, set_threads

    device = default_device(args.device)  # ValueError (one line, status 2) for a bad --device
    wanted = args.sections.split(",") if args.sections else list(SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        raise ValueError(f"--sections: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    set_threads(args.threads)  # before the facts, which record the thread count
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {args.out} is a file; it names the folder of the report files")
    facts = device_facts(device)
    print(f"fasttrack bench on {facts['device_name']} ({device}), torch {facts['torch']} "
          f"({facts['torch_threads']} threads), triton {facts['triton']}, CUDA extension: {facts['has_cuda_ext']}; "
          + ("full case matrix (--full)" if args.full else "small cases (--full runs the full matrix)"))
    rows, failed, t0 = [], [], time.perf_counter()
    for name in wanted:
        print(f"\n[{name}] {SECTIONS[name][1]}", flush=True)
        t = time.perf_counter()
        section_rows, section_failed = _section_rows(name, device, quick=not args.full)
        print(text_table(section_rows))
        print(f"({time.perf_counter() - t:.1f} s)", flush=True)
        if section_failed or any(r.get("error") for r in section_rows):
            failed.append(name)
        rows += section_rows
    result = {"facts": facts, "full": args.full, "quick": not args.full,
              "seconds": time.perf_counter() - t0, "rows": rows, "failed_sections": failed}
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1, default=str)
    (out / "bench.json").write_text(text)
    written = write_report(json.loads(text), out / "bench")
    print(f"\nwrote {out / 'bench.json'} ({len(rows)} rows, {result['seconds']:.0f} s) and "
          + ", ".join(str(p) for p in written))
    if not any(p.suffix == ".png" for p in written):
        print("(no chart: matplotlib is not installed; pip install fasttrack[plot])")
    for r in rows:
        if r.get("error"):
            print(f"error in {row_label(r)}: {r['error']}", file=sys.stderr)
    if failed:
        print(f"bench sections with errors: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def register(sub) -> argparse.ArgumentParser:
    """Add the `bench` subcommand to the subparsers `sub`."""
    b = sub.add_parser("bench", help="time and measure fasttrack against eager PyTorch on this device",
                       description="Runs each bench section on the device present (CUDA if any, else CPU), "
                                   "prints a table per section and writes DIR/bench.json, bench.md, "
                                   "bench.html and bench.png.")
    size = b.add_mutually_exclusive_group()
    size.add_argument("--full", action="store_true",
                      help="every section's full case matrix: more shapes, targets and repeats "
                           "(on a CUDA device SD-64/96/128 ops; on a CPU torch.compile too: far "
                           "longer than the default, which runs small cases in minutes)")
    size.add_argument("--quick", action="store_true",
                      help="the default (small cases); kept so that older scripts still run")
    b.add_argument("--sections", default=None,
                   help="comma-separated subset of: " + ", ".join(f"{k} ({v[1]})" for k, v in SECTIONS.items()))
    b.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    b.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: half the CPUs, at most 8; torch's own default "
                        "of one per core oversubscribes a small or shared machine)")
    b.add_argument("--out", default="fasttrack-bench", metavar="DIR",
                   help="folder of bench.json, bench.md, bench.html, bench.png (default: %(default)s)")
    b.set_defaults(func=run, catch_user_errors=True)
    return b
