"""Per-frame trace of DINTR with the merge clamp (clamp_val.py): python trace_clamp.py NAMES FRAMES SLACK
Per frame: IoU with the target / best IoU with a copy / box area over the true area."""
import sys

import numpy as np
import torch

import fasttrack.trackers.dintr.tracker as dt
from clamp_val import SLACK, ClampReader
from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval.metrics import iou

torch.set_num_threads(1)
dt.BoxReader = ClampReader
names, frames, SLACK[0] = sys.argv[1].split(","), int(sys.argv[2]), float(sys.argv[3])
tr = dt.DINTR.pretrained()
seqs = {s.name[-3:]: s for s in synthetic_split("val", num=20, num_frames=frames)}
for n in names:
    s = seqs[n]
    gt, d = np.asarray(s.gt), s.meta["distractors"]
    boxes = np.asarray(tr.run(s, gt[0], progress=False)[0])
    t = iou(boxes[1:], gt[1:])
    c = np.max([iou(boxes[1:], d[k, 1:]) for k in range(len(d))], 0) if len(d) else 0 * t
    tc = np.max([iou(gt[1:], d[k, 1:]) for k in range(len(d))], 0) if len(d) else 0 * t
    area = boxes[1:, 2] * boxes[1:, 3] / (gt[1:, 2] * gt[1:, 3])
    print(n, "AO %.3f" % t.mean(), "occluder" if s.meta["occluder"] is not None else "", flush=True)
    print("   iou:", " ".join("%.1f" % v for v in t))
    print("   cpy:", " ".join("%.1f" % v for v in c))
    print("   t~c:", " ".join("%.1f" % v for v in tc))
    print("  area:", " ".join("%.1f" % v for v in area))
