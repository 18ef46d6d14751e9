"""Experiment: DINTR crops whose side is context x max(w, h) (the square holding the 3x search
window) instead of context x sqrt(w h). python crop_side_variant.py START NUM FRAMES CONTEXT"""
import sys
import time

import numpy as np
import torch

import fasttrack.trackers.dintr.tracker as T
from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval.metrics import iou
from fasttrack.trackers.dintr import DINTR

torch.set_num_threads(1)


def max_side_windows(boxes, context):
    b = boxes.to(torch.float32)
    side = (context * torch.maximum(b[:, 2], b[:, 3]).clamp_min(1.0)).clamp_min(8.0)
    cx, cy = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
    return torch.stack([cx - side / 2, cy - side / 2, side], 1)


T.crop_windows = max_side_windows
start, num, frames, ctx = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
tr = DINTR.pretrained(context=ctx)
per, t0 = {}, time.time()
for s in synthetic_split("val", num=num, num_frames=frames, start=start):
    boxes = tr.run(s, s.gt[0], progress=False)[0]
    per[s.name[-3:]] = round(float(iou(np.asarray(boxes)[1:], np.asarray(s.gt)[1:]).mean()), 3)
print(f"max-side context {ctx}", f"val {start}..{start + num - 1} x {frames}", "AO %.3f" % np.mean(list(per.values())),
      per, "%.0f s" % (time.time() - t0), flush=True)
