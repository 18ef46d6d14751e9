"""DINTR closed-loop AO on val with setting overrides: python dintr_val.py NUM FRAMES '{...}'"""
import sys, time, torch, numpy as np
torch.set_num_threads(1)
from fasttrack.trackers.dintr import DINTR
from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval.metrics import iou
num, frames = int(sys.argv[1]), int(sys.argv[2])
extra = eval(sys.argv[3]) if len(sys.argv) > 3 else {}
tr = DINTR.pretrained(**extra)
per = {}; t0 = time.time()
for s in synthetic_split("val", num=num, num_frames=frames):
    boxes = tr.run(s, s.gt[0], progress=False)
    b = np.asarray(boxes if not isinstance(boxes, tuple) else boxes[0])
    per[s.name[-3:]] = round(float(iou(b[1:], np.asarray(s.gt)[1:]).mean()), 2)
print(extra, "AO %.3f" % np.mean(list(per.values())), per, "%.0f s" % (time.time() - t0), flush=True)
