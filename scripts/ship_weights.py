"""Score a `fasttrack train detrack|dmtrack` result on the held-out synthetic test split and write
it as the package's shipped weights (DeTrack.pretrained(), DMTrack.pretrained()), with the
numbers in its meta:

    python scripts/ship_weights.py detrack runs/tiny/detrack.pt
    python scripts/ship_weights.py dmtrack runs/dmtrack/dmtrack.pt
    python scripts/ship_weights.py tiny-sd runs/tiny-sd --updater runs/updater
    python scripts/ship_weights.py tiny-sd fasttrack/trackers/diffusion/weights/tiny_sd

tiny-sd: copies the `fasttrack train tiny-sd` folder into the package (DiffTracker.pretrained(),
DINTR.pretrained()) with both trackers' subfolders (Diff-Tracker's: the trained updater of
`fasttrack train diff-tracker-updater` and the settings below; DINTR's: its settings), then
scores both on synthetic:test and writes heldout.json beside them (AO per sequence, the static
box's AO, ms per frame on this machine, one thread). Given the package folder itself, it copies
nothing: it rewrites both trackers' settings from TRACKER_SETTINGS (the learned modules stay)
and re-scores them.

meta gains "test" (AO per sequence of synthetic:test and their mean, the closed-loop AO
`fasttrack eval synthetic:test` reports per sequence), "test4_ao" (the first 4 test sequences,
which the tracker's training tests re-measure), "static_test_ao" (holding the first box),
"photos_test" and "photos_test_grey" (the same on photos:test and photos:test:grey, the held-out
photographs; needs `fasttrack dataset photos`), "static_photos_test_ao" and "ms_per_frame" (this
machine, one thread, on synthetic:test). One thread, so the numbers are those of the README.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from fasttrack.data.photo_sequences import photo_split
from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval import metrics
from fasttrack.train import heldout_ao

PACKAGE = Path(__file__).resolve().parents[1] / "fasttrack" / "trackers"
TRACKERS = {"detrack": ("fasttrack.trackers.detrack.tracker", "DeTrack"),
            "dmtrack": ("fasttrack.trackers.dmtrack.tracker", "DMTrack")}


def static_ao(seqs) -> float:
    """AO of holding the first box, the mean over sequences as heldout_ao's."""
    return float(np.mean([metrics(np.repeat(s.gt[:1], len(s), 0), s.gt, skip_first=True)["ao"]
                          for s in seqs]))


def photo_scores(tracker) -> dict:
    """AO on photos:test and photos:test:grey, and the static box's on photos:test."""
    return {"photos_test": heldout_ao(tracker, photo_split("test")),
            "photos_test_grey": heldout_ao(tracker, photo_split("test", grey=True)),
            "static_photos_test_ao": static_ao(photo_split("test"))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tracker", choices=sorted(TRACKERS) + ["tiny-sd"])
    p.add_argument("checkpoint", help="OUT/<tracker>.pt of a `fasttrack train <tracker>` run "
                   "(tiny-sd: the OUT folder of `fasttrack train tiny-sd`)")
    p.add_argument("--updater", default=None, help="tiny-sd: OUT of `fasttrack train "
                   "diff-tracker-updater` (default: Diff-Tracker ships without a trained updater)")
    p.add_argument("--dest", default=None, help="default: the package's weights file")
    p.add_argument("--skip-photos", action="store_true",
                   help="score synthetic:test only (no photos:test, photos:test:grey)")
    args = p.parse_args()
    if args.tracker == "tiny-sd":
        return ship_tiny_sd(args)
    import importlib

    module = importlib.import_module(TRACKERS[args.tracker][0])
    cls = getattr(module, TRACKERS[args.tracker][1])
    args.dest = args.dest or str(PACKAGE / args.tracker / "weights" / module.PRETRAINED_FILE)
    torch.set_num_threads(1)
    tracker = cls.from_checkpoint(args.checkpoint).eval()
    meta = torch.load(args.checkpoint, weights_only=True).get("meta", {})
    test = synthetic_split("test")
    start = time.perf_counter()
    res = heldout_ao(tracker, test)
    frames = sum(len(s) for s in test)
    meta["ms_per_frame"] = round(1000 * (time.perf_counter() - start) / frames, 2)
    meta["test"] = res
    meta["test4_ao"] = heldout_ao(tracker, test[:4])["ao"]
    meta["static_test_ao"] = static_ao(test)
    if not args.skip_photos:
        meta.update(photo_scores(tracker))
    tracker.save(args.dest, meta=meta)
    if not args.skip_photos:
        print(f"photos:test AO {meta['photos_test']['ao']:.3f} (grey {meta['photos_test_grey']['ao']:.3f}, "
              f"static box {meta['static_photos_test_ao']:.3f})")
    print(f"test AO {res['ao']:.3f} (static box {meta['static_test_ao']:.3f}), first 4: "
          f"{meta['test4_ao']:.4f}, {meta['ms_per_frame']} ms/frame incl. init; per sequence: "
          + ", ".join(f"{k} {v:.3f}" for k, v in res["per_sequence"].items()))
    print(f"wrote {args.dest} ({Path(args.dest).stat().st_size / 1e6:.1f} MB)")
    return 0


def ship_tiny_sd(args) -> int:
    import json
    import shutil

    from fasttrack.trackers import DINTR, DiffTracker
    from fasttrack.trackers.diffusion.serialization import read_tracker_folder
    from fasttrack.trackers.diffusion.tiny_sd import TINY_SD_DIR, TRACKER_SETTINGS

    torch.set_num_threads(1)
    dest = Path(args.dest or TINY_SD_DIR)
    in_place = Path(args.checkpoint).resolve() == dest.resolve()
    if in_place and args.updater:
        raise SystemExit("--updater with the package folder itself: ship a trained folder instead")
    if not in_place:
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        src = Path(args.checkpoint)
        for sub in ("vae", "unet", "scheduler", "text_encoder", "tokenizer"):
            shutil.copytree(src / sub, dest / sub)
        for f in ("null_context.safetensors", "prompt_init.safetensors", "train.json"):
            shutil.copy(src / f, dest / f)
        if args.updater:
            shutil.copy(Path(args.updater) / "train.json", dest / "updater_train.json")
    test = synthetic_split("test")
    static = static_ao(test)
    report = {"static_test_ao": static}
    for cls in (DiffTracker, DINTR):
        settings = dict(TRACKER_SETTINGS[cls.__name__])
        if cls is DiffTracker and args.updater:
            tracker = cls.from_pretrained(dest, tracker_path=args.updater, **settings)
        else:
            tracker = cls.from_pretrained(dest, **settings)
        tracker.save_pretrained(dest)
        tracker = cls.from_pretrained(dest)    # what pretrained() reads when dest is the package
        start = time.perf_counter()
        res = heldout_ao(tracker, test)
        frames = sum(len(s) for s in test)
        res["ms_per_frame"] = round(1000 * (time.perf_counter() - start) / frames, 1)
        res["settings"] = read_tracker_folder(dest, cls._folder)[0]
        if not args.skip_photos:
            res.update(photo_scores(tracker))
            print(f"{cls.__name__}: photos:test AO {res['photos_test']['ao']:.3f} (grey "
                  f"{res['photos_test_grey']['ao']:.3f}, static box {res['static_photos_test_ao']:.3f})")
        report[cls.__name__] = res
        print(f"{cls.__name__}: test AO {res['ao']:.3f} (static box {static:.3f}), "
              f"{res['ms_per_frame']} ms/frame incl. init; per sequence: "
              + ", ".join(f"{k} {v:.3f}" for k, v in res["per_sequence"].items()), flush=True)
    with open(dest / "heldout.json", "w") as f:
        json.dump(report, f, indent=1)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"wrote {dest} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
