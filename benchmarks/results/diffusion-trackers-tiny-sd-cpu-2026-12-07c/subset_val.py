"""DINTR closed-loop AO on chosen "val" sequences, for several setting overrides in one process
(one torch thread): python subset_val.py NAMES FRAMES "[{...}, {...}]"
NAMES: comma-separated "val" indices ("002,003,017") or a range ("0-19").
Prints one line per settings: the mean AO (IoU over frames 2..N), per-sequence AO, wall time.
The other scripts of this folder import `val_names` and `score` from here."""
import sys
import time

import numpy as np
import torch

from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval.metrics import iou

torch.set_num_threads(1)


def val_names(arg):
    """"0-19" or "002,011" -> ["000", ..., "019"] or ["002", "011"]."""
    if "-" in arg:
        lo, hi = map(int, arg.split("-"))
        return ["%03d" % i for i in range(lo, hi + 1)]
    return arg.split(",")


def score(make_tracker, variants, label=str):
    """For each variant: tracker = make_tracker(variant), run closed loop from the first box on
    sys.argv[1]'s "val" sequences cut to sys.argv[2] frames, print label(variant), the AO and
    the per-sequence AO."""
    names, frames = val_names(sys.argv[1]), int(sys.argv[2])
    seqs = {s.name[-3:]: s for s in synthetic_split("val", num=20, num_frames=frames)}
    for v in variants:
        tr = make_tracker(v)
        per, t0 = {}, time.time()
        for n in names:
            s = seqs[n]
            boxes = tr.run(s, s.gt[0], progress=False)[0]
            per[n] = round(float(iou(np.asarray(boxes)[1:], np.asarray(s.gt)[1:]).mean()), 3)
        print(label(v), f"{len(names)} val x {frames}", "AO %.3f" % np.mean(list(per.values())),
              per, "%.0f s" % (time.time() - t0), flush=True)


if __name__ == "__main__":
    from fasttrack.trackers.dintr import DINTR
    score(lambda extra: DINTR.pretrained(**extra), eval(sys.argv[3]) if len(sys.argv) > 3 else [{}])
