"""`fasttrack demo`: a synthetic sequence through a tracker twice, with plain PyTorch and with
fasttrack's fused kernels (the same weights, switched in place), printing the per-frame agreement
of the two runs (IoU of their boxes: mean and min) and the FPS of each. Default: the
random-weight tiny DeTrack; nothing is downloaded. --seed seeds both the tiny weights and the
sequence.
"""
from __future__ import annotations

import argparse

import numpy as np

from .common import (add_tracker_args, default_device, make_tracker, run_label,
                     set_threads, tracker_options)

__all__ = ["register", "run"]


def register(sub) -> argparse.ArgumentParser:
    """Add the `demo` subcommand to the subparsers `sub`."""
    p = sub.add_parser("demo", help="plain PyTorch vs fasttrack kernels on a synthetic sequence",
                       description=__doc__.strip(), epilog="example:\n  fasttrack demo --tracker detrack "
                                            "--frames 30",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tracker_args(p, default="detrack", patch_option=False)
    p.add_argument("--frames", type=int, default=30, metavar="N",
                   help="length of the synthetic sequence (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, metavar="N",
                   help="untimed frames run in each mode first (default: %(default)s)")
    p.add_argument("--per-frame", action="store_true", help="print the IoU of every frame")
    p.set_defaults(func=run, catch_user_errors=True)
    return p


def run(args) -> int:
    """Run `fasttrack demo`; returns the exit status."""
    import fasttrack

    from ..data import synthetic_sequence
    from ..eval import iou, metrics

    device = default_device(args.device)
    if args.frames < 2:
        raise ValueError(f"--frames must be >= 2, got {args.frames}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    threads = set_threads(args.threads)
    seq = synthetic_sequence(args.frames, seed=args.seed)
    tracker = make_tracker(tracker_options(args, device, patched=False))
    kind = "tiny, random weights" if args.weights is None else f"weights {args.weights}"
    print(f"demo: {args.tracker} ({kind}) on a synthetic sequence of {len(seq)} frames "
          f"{seq.size[1]}x{seq.size[0]}, {run_label(device, threads)}")
    runs = {}
    for label, on in (("plain PyTorch", False), ("fasttrack", True)):
        (fasttrack.patch if on else fasttrack.unpatch)(tracker)
        if args.warmup:
            tracker.run(seq, seq.gt[0], progress=False, limit=args.warmup + 1)
        runs[label] = tracker.run(seq, seq.gt[0], desc=label)
    print(f"{'run':<14} {'FPS':>7} {'ms/frame':>9} {'AO vs gt':>9}")
    for label, (boxes, times) in runs.items():
        ao = metrics(boxes, seq.gt, skip_first=True)["ao"]
        print(f"{label:<14} {len(boxes) / times.sum():>7.1f} {1000 * times.mean():>9.1f} {ao:>9.3f}")
    (a, _), (b, _) = runs.values()
    ious = iou(a, b)
    if args.per_frame:
        print("frame IoU(plain, fasttrack): " + " ".join(f"{i + 1}:{v:.4f}" for i, v in enumerate(ious)))
    worst = int(np.argmin(ious))
    diff = float(np.abs(a.astype(np.float64) - b).max())
    print(f"per-frame agreement of the two runs: mean IoU {ious.mean():.6f}, min IoU "
          f"{ious.min():.6f} (frame {worst + 1}), max box difference {diff:.2e} px")
    speedup = runs["plain PyTorch"][1].sum() / runs["fasttrack"][1].sum()
    print(f"fasttrack / plain PyTorch speed: {speedup:.2f}x")
    return 0
