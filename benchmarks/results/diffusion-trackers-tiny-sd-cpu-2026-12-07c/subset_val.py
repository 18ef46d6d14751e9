"""DINTR closed-loop AO on chosen "val" sequences, for several setting overrides in one process
(one torch thread): python subset_val.py '002,003,017' FRAMES "[{...}, {...}]"
Prints one line per settings: the mean AO (IoU over frames 2..N), per-sequence AO, wall time."""
import sys
import time

import numpy as np
import torch

from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval.metrics import iou
from fasttrack.trackers.dintr import DINTR

torch.set_num_threads(1)
names, frames = sys.argv[1].split(","), int(sys.argv[2])
variants = eval(sys.argv[3]) if len(sys.argv) > 3 else [{}]
seqs = {s.name[-3:]: s for s in synthetic_split("val", num=20, num_frames=frames)}
for extra in variants:
    tr = DINTR.pretrained(**extra)
    per, t0 = {}, time.time()
    for n in names:
        s = seqs[n]
        boxes = tr.run(s, s.gt[0], progress=False)[0]
        per[n] = round(float(iou(np.asarray(boxes)[1:], np.asarray(s.gt)[1:]).mean()), 3)
    print(extra, f"{len(names)} val x {frames}", "AO %.3f" % np.mean(list(per.values())), per,
          "%.0f s" % (time.time() - t0), flush=True)
