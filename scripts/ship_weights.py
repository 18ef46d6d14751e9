"""Score a `fasttrack train detrack|dmtrack` result on the held-out synthetic test split and write
it as the package's shipped weights (DeTrack.pretrained(), DMTrack.pretrained()), with the
numbers in its meta:

    python scripts/ship_weights.py detrack runs/tiny/detrack.pt
    python scripts/ship_weights.py dmtrack runs/dmtrack/dmtrack.pt

meta gains "test" (AO per sequence of synthetic:test and their mean, the closed-loop AO
`fasttrack eval synthetic:test` reports per sequence), "test4_ao" (the first 4 test sequences,
which the tracker's training tests re-measure), "static_test_ao" (holding the first box) and
"ms_per_frame" (this machine, one thread). One thread, so the numbers are those of the README.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval import metrics
from fasttrack.train import heldout_ao

PACKAGE = Path(__file__).resolve().parents[1] / "fasttrack" / "trackers"
TRACKERS = {"detrack": ("fasttrack.trackers.detrack.tracker", "DeTrack"),
            "dmtrack": ("fasttrack.trackers.dmtrack.tracker", "DMTrack")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("tracker", choices=sorted(TRACKERS))
    p.add_argument("checkpoint", help="OUT/<tracker>.pt of a `fasttrack train <tracker>` run")
    p.add_argument("--dest", default=None, help="default: the package's weights file")
    args = p.parse_args()
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
    meta["static_test_ao"] = float(np.mean([
        metrics(np.repeat(s.gt[:1], len(s), 0), s.gt, skip_first=True)["ao"] for s in test]))
    tracker.save(args.dest, meta=meta)
    print(f"test AO {res['ao']:.3f} (static box {meta['static_test_ao']:.3f}), first 4: "
          f"{meta['test4_ao']:.4f}, {meta['ms_per_frame']} ms/frame incl. init; per sequence: "
          + ", ".join(f"{k} {v:.3f}" for k, v in res["per_sequence"].items()))
    print(f"wrote {args.dest} ({Path(args.dest).stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
