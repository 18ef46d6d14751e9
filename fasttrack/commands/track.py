"""`fasttrack track SOURCE --box x,y,w,h --tracker NAME`: track one target through a video, an
image folder or a data set sequence folder.

Writes to --out DIR: ``<name>.txt`` (one ``x,y,w,h`` line per frame, the toolkit format) and
the annotated frames, ``<name>.mp4`` (PyAV) when SOURCE is a video, else ``frames/00000001.png``
... (Pillow). Shows a progress bar, and at the end the FPS (frames / total time of the
tracker's init + update calls; reading and drawing excluded) and, when SOURCE has ground truth,
the agreement with it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .common import add_tracker_args, default_device, make_tracker, parse_box, run_sequence, write_boxes

__all__ = ["register", "run"]

EXAMPLES = """examples:
  fasttrack track clip.mp4 --box 120,80,40,60 --tracker detrack --out runs/clip
  fasttrack track data/GOT-10k/val/GOT-10k_Val_000001 --tracker detrack   # box from groundtruth.txt
  fasttrack track frames/ --box 10,20,30,40 --tracker dintr --weights ~/models/sd-2-1
"""


def register(sub) -> argparse.ArgumentParser:
    """Add the `track` subcommand to the subparsers `sub`."""
    p = sub.add_parser(
        "track", help="track one target through a video, an image folder or a sequence folder",
        description=__doc__.split("\n\n", 1)[1].strip(), epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE",
                   help="a video file, a folder of images, or one GOT-10k / LaSOT / OTB sequence "
                        "folder")
    p.add_argument("--box", default=None, metavar="X,Y,W,H",
                   help="the target in the first frame, in pixels (0-based); default: the first "
                        "ground-truth box of a sequence folder")
    add_tracker_args(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output folder (default: fasttrack-out/<sequence name>)")
    p.add_argument("--frames", type=int, default=None, metavar="N",
                   help="track only the first N frames")
    p.add_argument("--no-annotate", action="store_true",
                   help="write only the boxes, no annotated video / frames")
    p.set_defaults(func=run, catch_user_errors=True)
    return p


def _open_source(source: str):
    from ..data import open_sequences

    seqs = open_sequences(source)
    if len(seqs) != 1:
        names = ", ".join(s.name for s in seqs[:3]) + (", ..." if len(seqs) > 3 else "")
        raise ValueError(f"SOURCE {source} holds {len(seqs)} sequences ({names}); pass one of "
                         "them, or use `fasttrack eval` for a whole data set")
    return seqs[0]


def _first_box(seq, text: str | None):
    if text is not None:
        box = parse_box(text)
        H, W = seq.size
        x, y, w, h = box
        if x >= W or y >= H or x + w <= 0 or y + h <= 0:
            raise ValueError(f"--box {text} lies outside the {W}x{H} (width x height) first frame")
        return box
    if seq.gt is not None and np.isfinite(seq.gt[0]).all() and (seq.gt[0, 2:] > 0).all():
        return [float(v) for v in seq.gt[0]]
    raise ValueError(f"SOURCE {seq.meta.get('path', seq.name)} has no ground-truth box for "
                     "frame 1: pass --box x,y,w,h")


def _annotator(seq, out: Path, name: str):
    """(writer, callback for run_sequence) for the annotated output of `seq`."""
    from .annotate import Mp4Writer, PngWriter, draw_box, video_rate

    if seq.meta.get("layout") == "video":
        writer = Mp4Writer(out / f"{name}.mp4", video_rate(seq.meta["path"]))
    else:
        writer = PngWriter(out / "frames")

    def on_frame(i, frame, box):
        writer.write(draw_box(frame, box, label=f"{i + 1}"))
    return writer, on_frame


def run(args) -> int:
    """Run `fasttrack track`; returns the exit status."""
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    seq = _open_source(args.source)
    box = _first_box(seq, args.box)
    name = seq.name
    out = Path(args.out) if args.out else Path("fasttrack-out") / name
    tracker = make_tracker(args)
    writer, on_frame = (None, None) if args.no_annotate else _annotator(seq, out, name)
    try:
        boxes, times = run_sequence(tracker, seq, box, on_frame=on_frame, limit=args.frames)
    finally:
        if writer is not None:
            writer.close()
    path = write_boxes(out / f"{name}.txt", boxes)
    n, total = len(boxes), float(times.sum())
    mode = "fasttrack kernels" if not args.no_patch else "plain PyTorch"
    print(f"tracked {n} frames of {name} with {args.tracker} ({mode}, "
          f"{default_device(args.device)}): {n / total:.1f} FPS ({1000 * total / n:.1f} ms/frame, "
          f"init included)")
    print(f"boxes: {path}")
    if writer is not None:
        print(f"annotated {'video' if writer.path.suffix == '.mp4' else 'frames'}: {writer.path}")
    if seq.gt is not None:
        _print_agreement(boxes, seq.eval_gt[:n])
    return 0


def _print_agreement(boxes, gt) -> None:
    from ..eval import metrics, valid_mask

    if valid_mask(gt, skip_first=True).any():
        m = metrics(boxes, gt, skip_first=True)
        print(f"vs ground truth ({m['num_frames']} frames after the first): AO {m['ao']:.3f}, "
              f"success AUC {m['success_auc']:.3f}, precision@20px {m['precision']:.3f}")
