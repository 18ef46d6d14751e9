"""Per-frame trace of DINTR (shipped settings + overrides) on chosen "val" sequences (one torch
thread): python trace.py '002,003,017' FRAMES '{...}'
Per frame: IoU with the target, the best IoU with a copy, whether the target's centre is in the
crop window, and the box size / true size. Prints one line per sequence with the frames where
the track is lost (IoU < 0.3) and what it is on (copy / nothing)."""
import sys

import numpy as np
import torch

from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval.metrics import iou
from fasttrack.trackers.dintr import DINTR

torch.set_num_threads(1)
names, frames = sys.argv[1].split(","), int(sys.argv[2])
extra = eval(sys.argv[3]) if len(sys.argv) > 3 else {}
tr = DINTR.pretrained(**extra)
seqs = {s.name[-3:]: s for s in synthetic_split("val", num=20, num_frames=frames)}
for n in names:
    s = seqs[n]
    gt = np.asarray(s.gt)
    tr.init(s.frames[0], gt[0])
    rows = []
    for i in range(1, len(s.frames)):
        win = tr._windows(tr._reader.boxes)
        box = tr.update(s.frames[i])
        t = float(iou(box[None], gt[i:i + 1])[0])
        d = s.meta["distractors"]
        c = max([float(iou(box[None], d[k, i:i + 1])[0]) for k in range(len(d))] or [0.0])
        cx, cy = gt[i, :2] + gt[i, 2:] / 2
        inwin = True if win is None else bool(
            win[0, 0] <= cx <= win[0, 0] + win[0, 2] and win[0, 1] <= cy <= win[0, 1] + win[0, 2])
        rows.append((i, t, c, inwin, box[2] / gt[i, 2], box[3] / gt[i, 3]))
    ao = np.mean([r[1] for r in rows])
    lost = [r for r in rows if r[1] < 0.3]
    first = lost[0] if lost else None
    print(n, "AO %.3f" % ao, "lost frames", len(lost), "on copy", sum(r[2] > 0.3 for r in lost),
          "target left window", sum(not r[3] for r in rows),
          "first lost", first and tuple(round(float(v), 2) for v in first),
          "mean size ratio %.2f %.2f" % (np.mean([r[4] for r in rows]), np.mean([r[5] for r in rows])), flush=True)
    print("   iou:", " ".join("%.1f" % r[1] for r in rows))
    print("   cpy:", " ".join("%.1f" % r[2] for r in rows))
