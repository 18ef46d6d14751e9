"""`fasttrack dataset synth OUT --num N`: write synthetic sequences (fasttrack.data.synthetic:
a textured sprite on a smooth background, exact ground truth) in the GOT-10k layout, to try
`fasttrack eval` and `fasttrack track` without downloading anything:

    OUT/list.txt                       sequence names, one a line
    OUT/<seq>/00000001.png ...         frames (PNG: lossless, so the boxes stay exact)
    OUT/<seq>/groundtruth.txt          one x,y,w,h line per frame
    OUT/<seq>.mp4                      with --video: the frames as a video too (PyAV, lossy)
"""
from __future__ import annotations

import argparse

import numpy as np

__all__ = ["register", "run", "write_synthetic"]


def register(sub) -> argparse.ArgumentParser:
    """Add the `dataset` subcommand (with its `synth` action) to the subparsers `sub`."""
    p = sub.add_parser("dataset", help="make data sets (synthetic sequences in GOT-10k layout)",
                       description="Data set tools.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = actions.add_parser("synth", help="write synthetic sequences in GOT-10k layout",
                           description=__doc__.strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="example:\n  fasttrack dataset synth demo-data --num 4 "
                                  "--frames 20 && fasttrack eval demo-data --tracker detrack")
    s.add_argument("out", metavar="OUT", help="output folder (created)")
    s.add_argument("--num", type=int, default=4, metavar="N",
                   help="number of sequences (default: %(default)s)")
    s.add_argument("--frames", type=int, default=20, metavar="F",
                   help="frames per sequence (default: %(default)s)")
    s.add_argument("--size", default="128x160", metavar="HxW",
                   help="frame height x width in pixels (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of the first sequence; sequence i uses seed + i (default: 0)")
    s.add_argument("--occlusion", action="store_true", help="a dark bar sweeps over the target")
    s.add_argument("--scale-change", action="store_true", help="the target grows and shrinks")
    s.add_argument("--video", action="store_true",
                   help="also write each sequence as OUT/<seq>.mp4 (25 fps), to try "
                        "`fasttrack track` on a video")
    s.set_defaults(func=run, catch_user_errors=True)
    ph = actions.add_parser(
        "photos", help="fetch the real photographs the photo sequences are made of",
        description="Fetch Debian's wallpaper packages (backgrounds) and Tux Paint's stamps "
                    "(photographed objects with alpha masks) with `apt-get download`, shrink "
                    "them and write the photo library (fasttrack.data.photos: a fixed split of "
                    "the photographs into train / val / test). Sources already fetched are "
                    "kept. The library feeds `fasttrack eval photos:test` and `fasttrack train "
                    "--data synthetic photos`.",
        epilog="example:\n  fasttrack dataset photos && fasttrack eval photos:test --tracker detrack",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ph.add_argument("--out", default=None, metavar="DIR",
                    help="library folder (default: $FASTTRACK_PHOTOS or ~/.cache/fasttrack/photos)")
    ph.add_argument("--sources", nargs="+", default=None, metavar="PKG",
                    help="Debian packages to fetch (default: all of fasttrack.data.photos.SOURCES)")
    ph.set_defaults(func=run_photos, catch_user_errors=True)
    return p


def run_photos(args) -> int:
    """Run `fasttrack dataset photos`; returns the exit status."""
    from ..data.photos import SOURCES, fetch_photos

    lib = fetch_photos(args.out, args.sources or SOURCES)
    counts = lib.summary()["counts"]
    print(f"photo library at {lib.root}: backgrounds {counts['background']}, "
          f"objects {counts['object']}")
    return 0


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must be HxW (e.g. 128x160), got {text!r}") from None
    if h < 16 or w < 16:
        raise ValueError(f"--size must be at least 16x16, got {text!r}")
    return h, w


def write_synthetic(out, num: int, frames: int, size=(128, 160), seed: int = 0,
                    occlusion: bool = False, scale_change: bool = False,
                    video: bool = False) -> list[str]:
    """Write `num` synthetic sequences into `out` (GOT-10k layout, plus <seq>.mp4 files when
    `video`); returns their names.

    Everything is checked before the first file is written: the counts, `out` (a folder or
    nothing), and with `video` that PyAV imports (ImportError saying how to install it).
    The sprite is a quarter of the frame's height and a fifth of its width (at least 4 px).
    """
    from PIL import Image

    from ..data import synthetic_sequence
    from .common import out_folder

    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    if frames < 1:
        raise ValueError(f"--frames must be >= 1, got {frames}")
    out = out_folder(out, "OUT")
    if video:
        from ..data.video import require_av

        require_av("--video (writing mp4)")
    sprite = (max(4, size[0] // 4), max(4, size[1] // 5))
    names = []
    for i in range(num):
        seq = synthetic_sequence(frames, size=size, sprite_size=sprite, seed=seed + i,
                                 occlusion=occlusion, scale_change=scale_change)
        d = out / seq.name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(len(seq)):
            Image.fromarray(seq[k]).save(d / f"{k + 1:08d}.png")
        np.savetxt(d / "groundtruth.txt", seq.gt, fmt="%.4f", delimiter=",")
        if video:
            from .annotate import Mp4Writer

            writer = Mp4Writer(out / f"{seq.name}.mp4", rate=25)
            for k in range(len(seq)):
                writer.write(seq[k])
            writer.close()
        names.append(seq.name)
    (out / "list.txt").write_text("".join(f"{n}\n" for n in names))
    return names


def run(args) -> int:
    """Run `fasttrack dataset synth`; returns the exit status."""
    names = write_synthetic(args.out, args.num, args.frames, _size(args.size), args.seed,
                            args.occlusion, args.scale_change, args.video)
    print(f"wrote {len(names)} sequences x {args.frames} frames ({args.size}) in GOT-10k layout "
          f"to {args.out}: {', '.join(names)}" + (" (and an mp4 of each)" if args.video else ""))
    return 0
