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

from .common import (add_tracker_args, default_device, make_tracker, out_folder, parse_box,
                     run_label, set_threads, tracker_options, write_boxes)

__all__ = ["register", "run"]

EXAMPLES = """examples:
  fasttrack track clip.mp4 --box 120,80,40,60 --tracker detrack --out runs/clip
  fasttrack track data/GOT-10k/val/GOT-10k_Val_000001 --tracker detrack   # box from groundtruth.txt
  fasttrack track frames/ --box 10,20,30,40 --tracker dintr --weights ~/models/sd-2-1
  fasttrack track clip.mp4 --box -10,40,60,60 --tracker detrack   # a target entering the frame
  fasttrack track clip.mp4 --box 120,80,40,60 --tracker dmtrack --text "the red car on the left"
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
                   help="the target in the first frame, in pixels (0-based); it may stick out of "
                        "the frame (negative x, y) but must overlap it and be at most 4x its "
                        "size; default: the first ground-truth box of a sequence folder")
    add_tracker_args(p)
    p.add_argument("--text", default=None, metavar="TEXT",
                   help="the target's description, for --tracker dmtrack (default: the "
                        "sequence's own: LaSOT nlp.txt, TNL2K language.txt, OTB-Lang query; "
                        "none: vision only)")
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
    """The box to start from: --box, else the sequence's first ground-truth box, checked against
    the first frame by the trackers' own check_boxes (the one home of box validation)."""
    from ..trackers.base import check_boxes

    where = seq.meta.get("path", seq.name)
    if text is not None:
        return check_boxes(parse_box(text), seq.size, name="--box")
    if seq.gt is None:
        raise ValueError(f"SOURCE {where} has no ground truth: pass --box x,y,w,h")
    return check_boxes(seq.gt[0], seq.size, name=f"the first ground-truth box of SOURCE {where} "
                                                  "(pass --box x,y,w,h to choose one)")


def _annotator(seq, out: Path, name: str):
    """(writer, on_frame callback for Tracker.run) for the annotated output of `seq`."""
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
    device = default_device(args.device, args.tracker)
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be >= 1, got {args.frames}")
    if args.text is not None and args.tracker != "dmtrack":
        raise ValueError(f"--text applies to --tracker dmtrack (the vision-language tracker), "
                         f"not {args.tracker}")
    threads = set_threads(args.threads)
    seq = _open_source(args.source)
    if args.text is not None:
        seq.text = args.text
    name = seq.name
    out = out_folder(args.out if args.out else Path("fasttrack-out") / name)
    box = _first_box(seq, args.box)
    tracker = make_tracker(tracker_options(args, device))
    writer, on_frame = (None, None) if args.no_annotate else _annotator(seq, out, name)
    try:
        boxes, times = tracker.run(seq, box, on_frame=on_frame, limit=args.frames)
    finally:
        if writer is not None:
            writer.close()
    path = write_boxes(out / f"{name}.txt", boxes)
    n, total = len(boxes), float(times.sum())
    from ..trackers.registry import TRACKERS

    if not TRACKERS[args.tracker].patchable:
        mode = "nothing to patch"
    else:
        mode = "fasttrack kernels" if not args.no_patch else "plain PyTorch"
    print(f"tracked {n} frames of {name} with {args.tracker} ({mode}, "
          f"{run_label(device, threads)}): {n / total:.1f} FPS ({1000 * total / n:.1f} ms/frame, "
          "init included)")
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
