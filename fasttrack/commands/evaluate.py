"""`fasttrack eval DATASET --tracker NAME`: run a tracker over every sequence of a data set
folder (GOT-10k, LaSOT or OTB layout, detected) and evaluate it.

Writes each sequence's results in the toolkits' layout under --out DIR as soon as it is
tracked (<name> = --name, default the tracker name): GOT-10k ``<name>/<seq>/<seq>_001.txt`` and
``<seq>_time.txt``; OTB / LaSOT ``<name>/<seq>.txt`` and ``<name>/times/<seq>_time.txt``. A
sequence that fails (a frame that cannot be read, a tracker error) is reported with its name and
skipped; the others still run. Then prints per-sequence and overall metrics of the sequences
that succeeded (GOT-10k: AO / SR pooled over frames after the first, as its toolkit; OTB / LaSOT:
averaged over sequences) and FPS, and saves ``<name>_metrics.json`` (with the failures),
``<name>_success.png`` and ``<name>_precision.png`` in DIR. Exit status 1 when a sequence
failed; --resume then tracks only the sequences without complete result files.

--workers N spreads the sequences over N processes on this machine; --distributed over the
ranks of a torch.distributed (gloo) job started by torchrun (see fasttrack.commands.distributed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from operator import itemgetter
from pathlib import Path

import numpy as np

from .common import (add_tracker_args, default_device, out_folder, run_label, set_threads,
                     tracker_options)
from .evaluate_report import print_report, save_plots, sequence_metrics
from .evaluate_track import split_resumed, track_distributed, track_items, track_pool

__all__ = ["register", "run"]

EXAMPLES = """examples:
  fasttrack eval synthetic:test --tracker detrack       # the shipped DeTrack on its held-out split
  fasttrack eval synthetic:val:48x60 --tracker detrack  # 48 val sequences of 60 frames
  fasttrack dataset synth demo-data --num 4 && fasttrack eval demo-data --tracker detrack
  fasttrack eval data/GOT-10k/val --tracker detrack --weights detrack256.pt --workers 4
  fasttrack eval data/GOT-10k/val --tracker detrack --weights detrack256.pt --resume
  torchrun --nproc-per-node 4 -m fasttrack.cli eval data/LaSOT --tracker detrack --distributed
"""


def register(sub) -> argparse.ArgumentParser:
    """Add the `eval` subcommand to the subparsers `sub`."""
    p = sub.add_parser("eval", help="run a tracker over a data set; toolkit results, metrics, plots",
                       description=__doc__.split("\n\n", 1)[1].strip(), epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET",
                   help="data set folder (GOT-10k split, LaSOT root or category, OTB root), one "
                        "sequence folder, or synthetic:test / synthetic:val (fasttrack's held-out "
                        "synthetic splits, generated in memory; synthetic:val:48x60 takes 48 "
                        "sequences of 60 frames), or photos:test / photos:val (real photographs, "
                        "fasttrack.data.photo_sequences; needs `fasttrack dataset photos`; "
                        "photos:test:grey in greyscale)")
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
    p.add_argument("--resume", action="store_true",
                   help="skip the sequences whose result files in --out are complete (one line "
                        "per frame), reading them back for the metrics")
    p.add_argument("--timeout-min", type=float, default=24 * 60, metavar="MIN",
                   help="with --distributed: how long ranks wait for the slowest one "
                        "(default: %(default)s)")
    p.set_defaults(func=run, catch_user_errors=True)
    return p


def parse_synthetic(dataset: str) -> tuple[str, int | None, int | None]:
    """"synthetic:SPLIT[:NUM[xFRAMES]]" -> (split, num, frames); None keeps the split's default
    (test: 12 x 60, val: 6 x 40). "synthetic:val:48x60" is the 48-sequence val set the
    DeTrack recipes were compared on (docs/DESIGN.md 1.7), "synthetic:test" the held-out split.
    "photos:..." (fasttrack.data.photo_sequences) is read the same way by `parse_generated`."""
    kind, split, num, frames, grey = parse_generated(dataset)
    if kind != "synthetic" or grey:
        raise ValueError(f"DATASET {dataset!r}: not a synthetic:SPLIT[:NUMxFRAMES] name")
    return split, num, frames


def parse_generated(dataset: str) -> tuple[str, str, int | None, int | None, bool]:
    """"KIND:SPLIT[:NUM[xFRAMES]][:grey]" with KIND synthetic or photos -> (kind, split, num,
    frames, grey); None keeps the split's default. ":grey" (photos only) gives the same
    sequences in three equal luminance channels."""
    parts = dataset.split(":")
    kind = parts[0]
    bad = ValueError(f"DATASET {dataset!r}: write {kind}:SPLIT, {kind}:SPLIT:NUM or "
                     f"{kind}:SPLIT:NUMxFRAMES (SPLIT test, val or train; e.g. {kind}:val:48x60"
                     + (", and :grey at the end for greyscale" if kind == "photos" else "") + ")")
    grey = kind == "photos" and len(parts) >= 3 and parts[-1] == "grey"
    if grey:
        parts = parts[:-1]
    if kind not in ("synthetic", "photos") or len(parts) not in (2, 3) \
            or parts[1] not in ("test", "val", "train"):
        raise bad
    if len(parts) == 2:
        return kind, parts[1], None, None, grey
    num, sep, frames = parts[2].partition("x")
    if not num.isdigit() or (sep and not frames.isdigit()):
        raise bad
    num, frames = int(num), (int(frames) if frames else None)
    if num < 1 or (frames is not None and frames < 2):
        raise ValueError(f"DATASET {dataset!r}: NUM must be >= 1 and FRAMES >= 2")
    return kind, parts[1], num, frames, grey


def load_generated(dataset: str) -> list:
    """The sequences of a "synthetic:..." or "photos:..." DATASET name (parse_generated),
    scored as GOT-10k (AO / SR pooled over the frames after the first)."""
    kind, split, num, frames, grey = parse_generated(dataset)
    if kind == "synthetic":
        from ..data.synthetic import synthetic_split

        seqs = synthetic_split(split, num, frames)
    else:
        from ..data.photo_sequences import photo_split

        seqs = photo_split(split, num, frames, grey=grey)
    for s in seqs:
        s.meta["layout"] = "got10k"
    return seqs


def _load(dataset: str):
    from ..data import open_sequences

    if dataset.startswith(("synthetic:", "photos:")):
        return load_generated(dataset)
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


def _track(args, seqs, opts: dict, device: str) -> tuple[list[dict], bool]:
    """(results of the sequences this process reports: read back by --resume, tracked, or
    failed; whether this process reports for the whole run: False on distributed ranks > 0)."""
    if args.distributed:
        from .distributed import local_device, local_world_size

        # each rank its own GPU (LOCAL_RANK) unless --device says otherwise or the run is on
        # the CPU (asked for, no GPU here, or a CPU-only tracker); the ranks on one machine
        # share its CPUs
        rank_device = device if device == "cpu" else local_device(args.device) or device
        opts = {**opts, "device": rank_device,
                "threads": set_threads(args.threads, local_world_size())}
        return track_distributed(seqs, opts, args.timeout_min, args.resume)
    items = list(enumerate(seqs))
    done, todo = split_resumed(items, opts["root"], opts["frames"]) if args.resume else ([], items)
    workers = max(1, min(args.workers, len(todo)))
    opts = {**opts, "threads": set_threads(args.threads, workers)}
    if done:
        print(f"--resume: {len(done)} of {len(seqs)} sequences already in {opts['root']}")
    print(f"eval: {opts['tracker']} on {len(todo)} sequences, "
          f"{run_label(device, opts['threads'], workers)}", flush=True)
    if workers > 1:
        return done + track_pool(todo, opts, workers), True
    return done + track_items(todo, opts), True


def _report(results, seqs, out: Path, name: str, wall: float) -> int:
    """Print each failure (stderr, one line naming the sequence), the metrics of the sequences
    that succeeded, and save them with the plots. Returns the exit status: 1 if any failed."""
    by_index = itemgetter("index")
    failed = sorted((r for r in results if "error" in r), key=by_index)
    ok = sorted((r for r in results if "error" not in r), key=by_index)
    for r in failed:
        print(f"fasttrack eval: error: sequence {r['name']} failed: {r['error']}", file=sys.stderr)
    print(f"\nresults of {name} on {len(ok)} of {len(seqs)} sequences: {out / name}")
    if ok:
        got10k = seqs[0].meta.get("layout") == "got10k"
        report = sequence_metrics(ok, seqs, skip_first=got10k)
        report["json"]["failed"] = {r["name"]: r["error"] for r in failed}
        print_report(report, got10k)
        frames = sum(len(r["boxes"]) for r in ok if not r.get("resumed"))
        print(f"wall clock: {frames} frames tracked in {wall:.1f} s ({frames / wall:.1f} frames/s, "
              "tracker builds included); FPS columns: frames / tracker time of the process that "
              "ran them")
        (out / f"{name}_metrics.json").write_text(json.dumps(report["json"], indent=1))
        print(f"metrics: {out / f'{name}_metrics.json'}")
        print(save_plots(report, out, name))
    if failed:
        print(f"fasttrack eval: error: {len(failed)} of {len(seqs)} sequences failed"
              + (f"; the metrics cover the other {len(ok)}" if ok else "; no metrics")
              + ". Once fixed, --resume tracks only the sequences without results",
              file=sys.stderr)
        return 1
    return 0


def run(args) -> int:
    """Run `fasttrack eval`; returns the exit status (1 when a sequence failed)."""
    device = default_device(args.device, args.tracker)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    if args.distributed and args.workers > 1:
        raise ValueError("--distributed runs one process per rank: drop --workers (use "
                         "torchrun --nproc-per-node N instead)")
    out = out_folder(args.out)
    seqs = _load(args.dataset)
    name = args.name or args.tracker
    opts = {**tracker_options(args, device), "frames": args.frames, "root": str(out / name)}
    start = time.perf_counter()
    results, reports = _track(args, seqs, opts, device)
    if not reports:  # a distributed rank > 0: rank 0 reports; its own failures set its status
        return 1 if any("error" in r for r in results) else 0
    return _report(results, seqs, out, name, time.perf_counter() - start)
