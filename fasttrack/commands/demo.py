"""`fasttrack demo`: a held-out synthetic sequence (fasttrack.data.synthetic, split "test":
never seen in training) through a tracker twice, with plain PyTorch and with fasttrack's fused
kernels (the same weights, switched in place), printing each run's AO against the ground truth,
the per-frame agreement of the two runs (IoU of their boxes: mean and min) and the FPS of each.
Default: the trained tiny DeTrack that ships with fasttrack; nothing is downloaded. --out DIR
writes the frames with the ground truth (green) and the fasttrack run's boxes (red).
"""
from __future__ import annotations

import argparse

import numpy as np

from .annotate import BOX_COLOR
from .common import (add_tracker_args, default_device, make_tracker, out_folder, run_label,
                     set_threads, tracker_options)

GT_COLOR = (40, 220, 40)

__all__ = ["register", "run"]


def register(sub) -> argparse.ArgumentParser:
    """Add the `demo` subcommand to the subparsers `sub`."""
    p = sub.add_parser("demo", help="plain PyTorch vs fasttrack kernels on a synthetic sequence",
                       description=__doc__.strip(), epilog="example:\n  fasttrack demo --tracker detrack "
                                            "--frames 30",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tracker_args(p, default="detrack", patch_option=False)
    p.add_argument("--frames", type=int, default=30, metavar="N",
                   help="frames of the sequence to track (default: %(default)s, at most 60)")
    p.add_argument("--sequence", type=int, default=0, metavar="K",
                   help="which held-out test sequence, 0 .. 11 (default: %(default)s)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write DIR/00000001.png ..: ground truth green, predicted boxes red")
    p.add_argument("--warmup", type=int, default=3, metavar="N",
                   help="untimed frames run in each mode first (default: %(default)s)")
    p.add_argument("--per-frame", action="store_true", help="print the IoU of every frame")
    p.set_defaults(func=run, catch_user_errors=True)
    return p


def run(args) -> int:
    """Run `fasttrack demo`; returns the exit status."""
    import fasttrack

    from ..data import Sequence
    from ..data.synthetic import synthetic_split
    from ..eval import iou, metrics
    from ..trackers.registry import TRACKERS

    if not TRACKERS[args.tracker].patchable:
        raise ValueError(f"--tracker {args.tracker}: demo compares plain PyTorch with fasttrack's "
                         f"kernels, and {args.tracker} has nothing to patch (try `fasttrack eval "
                         f"synthetic:test --tracker {args.tracker}`)")
    device = default_device(args.device)
    if not 2 <= args.frames <= 60:
        raise ValueError(f"--frames must be in [2, 60], got {args.frames}")
    if not 0 <= args.sequence <= 11:
        raise ValueError(f"--sequence must be in [0, 11] (the 12 held-out test sequences), got "
                         f"{args.sequence}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    threads = set_threads(args.threads)
    full = synthetic_split("test", num=1, start=args.sequence)[0]
    seq = Sequence(full.name, full.frames[:args.frames], full.gt[:args.frames], meta=full.meta)
    out = out_folder(args.out, "--out") if args.out else None
    tracker = make_tracker(tracker_options(args, device, patched=False))
    if args.weights is not None:
        kind = f"weights {args.weights}"
    elif args.tracker in ("detrack", "dmtrack"):
        kind = "trained on synthetic and photo sequences, shipped"
    else:
        kind = "on tiny-sd trained on synthetic sequences, shipped"
    m = full.meta
    print(f"demo: {args.tracker} ({kind}) on held-out synthetic sequence {seq.name} "
          f"({len(seq)} frames {seq.size[1]}x{seq.size[0]}, {m['background_kind']} background, "
          f"{len(m['distractors'])} distractors, speed {m['speed']:.1f}"
          f"{', occlusion' if m['occlusion'] else ''}{', scale change' if m['scale_change'] else ''}), "
          f"{run_label(device, threads)}")
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
    if out is not None:
        from .annotate import PngWriter, draw_box

        writer = PngWriter(out)
        for i, (frame, truth, box) in enumerate(zip(seq, seq.gt, b)):
            img = draw_box(frame, truth, color=GT_COLOR)
            writer.write(draw_box(img, box, color=BOX_COLOR, label=f"{i + 1}"))
        print(f"frames: {out} (ground truth green, {args.tracker} red)")
    return 0
