"""DINTR closed-loop AO on "val" with setting overrides (one torch thread):
python dintr_val.py START NUM FRAMES '{...}'   e.g. 0 10 40 "{'context': 3.0}"
Prints the settings, the mean AO (IoU over frames 2..N, averaged over sequences), per-sequence AO
and the wall time."""
import sys
import time

import numpy as np
import torch

from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval.metrics import iou
from fasttrack.trackers.dintr import DINTR

torch.set_num_threads(1)
start, num, frames = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
extra = eval(sys.argv[4]) if len(sys.argv) > 4 else {}
tr = DINTR.pretrained(**extra)
per, t0 = {}, time.time()
for s in synthetic_split("val", num=num, num_frames=frames, start=start):
    boxes = tr.run(s, s.gt[0], progress=False)[0]
    per[s.name[-3:]] = round(float(iou(np.asarray(boxes)[1:], np.asarray(s.gt)[1:]).mean()), 3)
print(extra, f"val {start}..{start + num - 1} x {frames}", "AO %.3f" % np.mean(list(per.values())), per,
      "%.0f s" % (time.time() - t0), flush=True)
