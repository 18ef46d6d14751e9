"""`fasttrack eval DATASET --tracker NAME`: run a tracker over every sequence of a data set
folder (GOT-10k, LaSOT or OTB layout, detected) and evaluate it.

Writes per-sequence results in the toolkits' layout under --out DIR (<name> = --name, default
the tracker name): GOT-10k ``<name>/<seq>/<seq>_001.txt`` and ``<seq>_time.txt``; OTB / LaSOT
``<name>/<seq>.txt`` and ``<name>/times/<seq>_time.txt``. Then prints per-sequence and overall
metrics (GOT-10k: AO / SR pooled over frames after the first, as its toolkit; OTB / LaSOT:
averaged over sequences) and FPS, and saves ``<name>_metrics.json``, ``<name>_success.png`` and
``<name>_precision.png`` in DIR.

--workers N spreads the sequences over N processes on this machine; --distributed over the
ranks of a torch.distributed (gloo) job started by torchrun (see fasttrack.commands.distributed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .common import add_tracker_args, run_sequence, write_boxes, write_times
from .evaluate_report import print_report, save_plots, sequence_metrics

__all__ = ["register", "run", "track_items", "write_results"]

EXAMPLES = """examples:
  fasttrack dataset synth demo-data --num 4 && fasttrack eval demo-data --tracker detrack
  fasttrack eval data/GOT-10k/val --tracker detrack --weights detrack256.pt --workers 4
  torchrun --nproc-per-node 4 -m fasttrack.cli eval data/LaSOT --tracker detrack --distributed
"""


def register(sub) -> argparse.ArgumentParser:
    """Add the `eval` subcommand to the subparsers `sub`."""
    p = sub.add_parser("eval", help="run a tracker over a data set; toolkit results, metrics, plots",
                       description=__doc__.split("\n\n", 1)[1].strip(), epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET",
                   help="data set folder (GOT-10k split, LaSOT root or category, OTB root) or one "
                        "sequence folder")
    add_tracker_args(p)
    p.add_argument("--out", default="fasttrack-results", metavar="DIR",
                   help="results folder (default: %(default)s)")
    p.add_argument("--name", default=None, help="results subfolder name (default: the tracker name)")
    p.add_argument("--frames", type=int, default=None, metavar="N",
                   help="track only the first N frames of each sequence (quick tries)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes on this machine, sequences spread over them (default: 1)")
    p.add_argument("--distributed", action="store_true",
                   help="one rank of a torch.distributed job (torchrun sets RANK, WORLD_SIZE, "
                        "MASTER_ADDR, MASTER_PORT): rank r tracks sequences i %% WORLD_SIZE == r")
    p.add_argument("--timeout-min", type=float, default=24 * 60, metavar="MIN",
                   help="with --distributed: how long ranks wait for the slowest one "
                        "(default: %(default)s)")
    p.set_defaults(func=run, catch_user_errors=True)
    return p


def _options(args, device=None) -> dict:
    return {"tracker": args.tracker, "weights": args.weights, "patched": not args.no_patch,
            "seed": args.seed, "device": device or args.device, "frames": args.frames,
            "threads": args.threads}


def _load(dataset: str):
    from ..data import open_sequences

    seqs = open_sequences(dataset)
    for s in seqs:
        if s.gt is None:
            raise ValueError(f"DATASET {dataset}: sequence {s.name!r} has no ground truth; eval "
                             "needs GOT-10k / LaSOT / OTB folders (use `fasttrack track` for "
                             "plain videos and image folders)")
        first = s.gt[0]
        if not (np.isfinite(first).all() and first[2] > 0 and first[3] > 0):
            raise ValueError(f"DATASET {dataset}: sequence {s.name!r} has no valid first box "
                             f"({first.tolist()}); the tracker starts from it")
    if not seqs:
        raise ValueError(f"DATASET {dataset}: no sequences found")
    return seqs


def _build(opts: dict):
    from ..trackers.registry import build_tracker
    from .common import default_device, set_threads

    set_threads(opts["threads"])
    return build_tracker(opts["tracker"], opts["weights"], patched=opts["patched"],
                         seed=opts["seed"], device=default_device(opts["device"]))


def _track_one(tracker, index: int, seq, opts: dict, progress: bool) -> dict:
    boxes, times = run_sequence(tracker, seq, seq.gt[0], progress=progress, limit=opts["frames"])
    return {"index": index, "name": seq.name, "boxes": boxes, "times": times}


def track_items(items, opts: dict, log=print, progress: bool = True) -> list[dict]:
    """Track (index, Sequence) pairs in this process with one tracker built from `opts`."""
    tracker = _build(opts)
    results = []
    for k, (i, seq) in enumerate(items):
        r = _track_one(tracker, i, seq, opts, progress)
        results.append(r)
        log(f"[{k + 1}/{len(items)}] {seq.name}: {len(r['boxes'])} frames, "
            f"{len(r['boxes']) / r['times'].sum():.1f} FPS")
    return results


_WORKER: dict = {}


def _worker_init(opts: dict) -> None:
    # A failing initializer would only show as BrokenProcessPool: keep the error and raise it
    # from the first task, so that the parent gets the real exception (and its message).
    _WORKER["opts"] = opts
    try:
        _WORKER["tracker"] = _build(opts)
    except Exception as exc:
        _WORKER["error"] = exc


def _worker_track(index: int, seq) -> dict:
    if "error" in _WORKER:
        raise _WORKER["error"]
    return _track_one(_WORKER["tracker"], index, seq, _WORKER["opts"], progress=False)


def _track_pool(seqs, opts: dict, workers: int) -> list[dict]:
    """Spread the sequences over `workers` spawned processes, one tracker each (with
    cpu_count // workers torch threads unless --threads says otherwise)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    if opts["threads"] is None:
        opts = {**opts, "threads": max(1, (os.cpu_count() or 1) // workers)}
    ctx = multiprocessing.get_context("spawn")
    results = []
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(opts,)) as pool:
        futures = [pool.submit(_worker_track, i, s) for i, s in enumerate(seqs)]
        try:
            for k, fut in enumerate(as_completed(futures)):
                r = fut.result()
                results.append(r)
                print(f"[{k + 1}/{len(seqs)}] {r['name']}: {len(r['boxes'])} frames, "
                      f"{len(r['boxes']) / r['times'].sum():.1f} FPS", flush=True)
        except BaseException:
            for fut in futures:  # stop at the first failure: skip the sequences not started
                fut.cancel()
            raise
    return sorted(results, key=lambda r: r["index"])


def _track_distributed(seqs, args):
    """This rank's share of the sequences, gathered. Returns (results, errors): on rank 0 all
    results in data set order and every rank's error message; on other ranks (None, own
    errors)."""
    import traceback

    from . import USER_ERRORS
    from .distributed import DistributedContext, gather, local_device, shard

    with DistributedContext(args.timeout_min) as ctx:
        opts = _options(args, local_device(args.device))
        mine = shard(seqs, ctx.rank, ctx.world_size)
        log = lambda m: print(f"[rank {ctx.rank}] {m}", flush=True)  # noqa: E731
        try:
            local = {"results": track_items(mine, opts, log=log, progress=False)}
        except Exception as exc:  # every rank must reach the gather, or the others wait
            if not isinstance(exc, USER_ERRORS):
                traceback.print_exc()
            local = {"error": f"rank {ctx.rank}: {type(exc).__name__}: {exc}"}
        everything = gather(local, ctx.world_size)
        if ctx.rank != 0:
            return None, [local["error"]] if "error" in local else []
    errors = [g["error"] for g in everything if "error" in g]
    results = sorted((r for g in everything for r in g.get("results", [])), key=lambda r: r["index"])
    return results, errors


def write_results(results, seqs, out: Path, name: str) -> Path:
    """Write boxes and per-frame times in the toolkit layout of the data set; returns the
    tracker's results folder."""
    root = Path(out) / name
    for r in results:
        seq = seqs[r["index"]]
        if seq.meta.get("layout") == "got10k":
            write_boxes(root / r["name"] / f"{r['name']}_001.txt", r["boxes"])
            write_times(root / r["name"] / f"{r['name']}_time.txt", r["times"])
        else:
            write_boxes(root / f"{r['name']}.txt", r["boxes"])
            write_times(root / "times" / f"{r['name']}_time.txt", r["times"])
    return root


def run(args) -> int:
    """Run `fasttrack eval`; returns the exit status."""
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.distributed and args.workers > 1:
        raise ValueError("--distributed runs one process per rank: drop --workers (use "
                         "torchrun --nproc-per-node N instead)")
    seqs = _load(args.dataset)
    name = args.name or args.tracker
    start = time.perf_counter()
    if args.distributed:
        results, errors = _track_distributed(seqs, args)
        if errors:
            print("fasttrack eval: error: " + "; ".join(" ".join(e.split()) for e in errors),
                  file=sys.stderr)
            return 1
        if results is None:
            return 0
    elif args.workers > 1:
        results = _track_pool(seqs, _options(args), min(args.workers, len(seqs)))
    else:
        results = track_items(list(enumerate(seqs)), _options(args))
    wall = time.perf_counter() - start
    root = write_results(results, seqs, Path(args.out), name)
    got10k = seqs[0].meta.get("layout") == "got10k"
    report = sequence_metrics(results, seqs, skip_first=got10k)
    print(f"\nresults of {name} on {len(seqs)} sequences: {root}")
    print_report(report, got10k)
    frames = sum(len(r["boxes"]) for r in results)
    print(f"wall clock: {frames} frames in {wall:.1f} s ({frames / wall:.1f} frames/s, tracker "
          "builds included); FPS columns: frames / tracker time of the process that ran them")
    out = Path(args.out)
    (out / f"{name}_metrics.json").write_text(json.dumps(report["json"], indent=1))
    print(f"metrics: {out / f'{name}_metrics.json'}")
    print(save_plots(report, out, name))
    return 0
