"""Pieces the `fasttrack` subcommands share: tracker options, the checked --device and the
--threads default, the box argument, the output folder, the timed per-frame loop and the
result-file format.

Every command that computes (track, eval, demo) starts with ``default_device(args.device)``
(so that a bad --device fails in one line before anything is read, built or written), then
``set_threads(args.threads, workers)``, and builds its tracker from :func:`tracker_options`
with :func:`make_tracker`.

Result files hold one box per frame, ``x,y,w,h`` with 3 decimals (the GOT-10k / OTB toolkit
format); time files one per-frame time in seconds per line.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

__all__ = ["add_tracker_args", "tracker_options", "make_tracker", "parse_box", "out_folder",
           "write_boxes", "write_times", "default_device", "default_threads",
           "set_threads", "run_label"]


def add_tracker_args(parser: argparse.ArgumentParser, default: str | None = None,
                     patch_option: bool = True) -> None:
    """--tracker (required unless `default`), --weights, --no-patch (when `patch_option`),
    --device, --seed and --threads."""
    from ..trackers.registry import TRACKERS

    names = ", ".join(f"{k} ({v.description}; --weights: {v.weights or 'none'})"
                      for k, v in TRACKERS.items())
    parser.add_argument("--tracker", choices=list(TRACKERS), default=default, required=default is None,
                        metavar="NAME", help=f"tracker to run: {names}"
                        + (" (default: %(default)s)" if default else ""))
    parser.add_argument("--weights", default=None, metavar="PATH",
                        help="trained weights (see --tracker); default: what ships with "
                             "fasttrack: detrack and dmtrack trained on synthetic and photo "
                             "sequences, the diffusion trackers on tiny-sd (trained on synthetic "
                             "sequences)")
    if patch_option:
        parser.add_argument("--no-patch", action="store_true",
                            help="run the plain PyTorch model instead of fasttrack's fused kernels")
    parser.add_argument("--device", default=None,
                        help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--precision", choices=["fp32", "tf32", "bf16", "fp16"], default="fp32",
                        help="run the tracker in float32 (default), TF32 matmuls (CUDA), or "
                             "under bfloat16 / float16 autocast")
    parser.add_argument("--seed", type=int, default=0, help="seed of a tracker's own noise "
                        "(Diff-Tracker's latent noise; the others are deterministic) "
                        "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads per process (default: half the CPUs, at most 8, "
                             "shared among --workers; 1 is often fastest for the tiny models)")


def default_device(device: str | None, tracker: str | None = None) -> str:
    """The --device to run on, checked: `device` ("cpu", "cuda", "cuda:1", "mps"), or "cuda"
    when a GPU is present, else "cpu" ("cpu" for a registered `tracker` name that runs on the
    CPU only: the OpenCV trackers). ValueError naming --device when `device` is not a torch
    device or names one this machine does not have (so a command fails in one line before it
    builds anything)."""
    import torch

    if not device:
        if tracker is not None:
            from ..trackers.registry import TRACKERS

            if tracker in TRACKERS and TRACKERS[tracker].cpu_only:
                return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is available here "
                             f"(torch {torch.__version__}, CUDA build: {torch.version.cuda})")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s)")
    elif d.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {device}: MPS is not available here")
    elif d.type != "cpu":
        raise ValueError(f"--device {device!r}: fasttrack runs on cpu, cuda or mps")
    return str(d)


def default_threads(workers: int = 1) -> int:
    """torch CPU threads per process when --threads is not given: half the CPUs, at most 8,
    shared among `workers` processes, at least 1. torch's own default (one thread per core)
    oversubscribes a small or shared machine: with the machine's other work, or with the
    inter-op pool, its threads wait on each other (on a 2-core machine demo and bench ran
    50-180x slower than at 1 thread)."""
    import os

    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    return max(1, min(8, (os.cpu_count() or 1) // 2) // workers)


def set_threads(threads: int | None, workers: int = 1) -> int:
    """torch.set_num_threads(threads), or default_threads(workers) when threads is None
    (ValueError below 1). Returns the thread count set."""
    if threads is None:
        threads = default_threads(workers)
    if isinstance(threads, bool) or int(threads) != threads or threads < 1:
        raise ValueError(f"--threads must be an int >= 1, got {threads}")
    import torch

    torch.set_num_threads(int(threads))
    return int(threads)


def run_label(device: str, threads: int, workers: int = 1) -> str:
    """Where a run computes, for the one-line summaries: "cpu, 4 threads" or "cuda, 2 workers
    x 1 thread"."""
    per = f"{threads} thread" + ("s" if threads != 1 else "")
    return f"{device}, {workers} workers x {per}" if workers > 1 else f"{device}, {per}"


def tracker_options(args, device: str, patched: bool | None = None) -> dict:
    """The picklable options :func:`make_tracker` builds a tracker from (they travel to --workers
    processes): --tracker, --weights, --seed, the checked `device`, and `patched` (default: not
    --no-patch)."""
    if patched is None:
        patched = not args.no_patch
    return {"tracker": args.tracker, "weights": args.weights, "patched": bool(patched),
            "seed": args.seed, "device": device, "precision": getattr(args, "precision", "fp32")}


def make_tracker(opts: dict):
    """Build the tracker of :func:`tracker_options` `opts` in this process (torch threads are
    the caller's: :func:`set_threads`)."""
    from ..trackers.registry import build_tracker

    return build_tracker(opts["tracker"], opts["weights"], patched=opts["patched"],
                         seed=opts["seed"], device=opts["device"],
                         precision=opts.get("precision", "fp32"))


def out_folder(path, arg: str = "--out") -> Path:
    """`path` as the output folder of option `arg`, checked before anything is computed:
    ValueError naming `arg` when it exists and is not a folder. Creates nothing."""
    from ..data.sequences import path_problem

    problem = path_problem(path, "folder")
    if problem and problem != "no such folder":  # a missing folder is created when written
        raise ValueError(f"{arg} {path} {problem}; expected a folder (created if missing)")
    return Path(path)


def parse_box(text: str, arg: str = "--box") -> list[float]:
    """Parse "x,y,w,h" (commas or spaces; negative x, y allowed) into 4 finite floats.
    ValueError naming `arg` otherwise. Whether the box fits a frame is
    fasttrack.trackers.base.check_boxes's to say."""
    parts = [p for p in str(text).replace(",", " ").split() if p]
    try:
        box = [float(p) for p in parts]
    except ValueError:
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"{arg} must be 4 numbers x,y,w,h (pixels, 0-based), got {text!r}")
    return box


def write_boxes(path, boxes) -> Path:
    """Write (N, 4) boxes as ``x,y,w,h`` lines (3 decimals); creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.asarray(boxes, np.float64).reshape(-1, 4), fmt="%.3f", delimiter=",")
    return path


def write_times(path, times) -> Path:
    """Write per-frame times in seconds, one per line (the GOT-10k ``<seq>_time.txt``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, np.asarray(times, np.float64).reshape(-1, 1), fmt="%.8f")
    return path
