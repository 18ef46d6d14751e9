"""DINTR closed-loop AO on "val" with a constant-velocity motion model in the readout (script-level
experiment; one torch thread):
python motion_val.py NAMES FRAMES MOMENTUM INFLUENCE '{settings}'
  NAMES: comma-separated val indices ('002,003') or START:NUM ('0:20').
  MOMENTUM a: velocity v <- (1 - a) v + a (c_t - c_{t-1}); the next frame's crop and search
    window are centred on c_t + v (a = 0: the shipped tracker).
  INFLUENCE w: the peak is the argmax of (1 - w) m' + w hann over the search window (SiamFC's
    cosine window, centred on the prediction); w = 0: the plain peak."""
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import fasttrack.trackers.diffusion.readout as ro
from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval.metrics import iou
from fasttrack.trackers.dintr import DINTR

torch.set_num_threads(1)
names, frames = sys.argv[1], int(sys.argv[2])
A, WINF = float(sys.argv[3]), float(sys.argv[4])
extra = eval(sys.argv[5]) if len(sys.argv) > 5 else {}

_plain = ro.read_boxes


def read_boxes(maps, prev_boxes, image_size, *, threshold=0.5, search=3.0, scale_step=float("inf")):
    if WINF == 0:
        return _plain(maps, prev_boxes, image_size, threshold=threshold, search=search, scale_step=scale_step)
    # same as the library's, except the peak: argmax of (1 - w) m' + w hann(window)
    K, h, w = maps.shape
    H, W = int(image_size[0]), int(image_size[1])
    m = maps.to(torch.float32)
    prev = prev_boxes.to(torch.float32)
    window = ro.search_window(prev, (H, W), (h, w), float(search))
    inf = torch.tensor(float("inf"))
    lo = torch.where(window, m, inf).flatten(1).amin(1).view(K, 1, 1)
    hi = torch.where(window, m, -inf).flatten(1).amax(1).view(K, 1, 1)
    norm = ((m - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
    cx, cy = prev[:, 0] + prev[:, 2] / 2, prev[:, 1] + prev[:, 3] / 2
    half_w = (prev[:, 2] * search / 2).clamp_min(W / w)
    half_h = (prev[:, 3] * search / 2).clamp_min(H / h)
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * (W / w)
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * (H / h)
    hx = 0.5 + 0.5 * torch.cos(torch.pi * ((xs[None] - cx[:, None]) / half_w[:, None]).clamp(-1, 1))
    hy = 0.5 + 0.5 * torch.cos(torch.pi * ((ys[None] - cy[:, None]) / half_h[:, None]).clamp(-1, 1))
    score = (1 - WINF) * norm + WINF * hy[:, :, None] * hx[:, None, :]
    score = torch.where(window, score, -inf)
    peak = score.flatten(1).argmax(1)
    # the library's region growing from that peak: a map whose maximum sits at the chosen cell
    bump = torch.zeros_like(m).flatten(1)
    bump.scatter_(1, peak[:, None], 1.0)
    m2 = torch.where(bump.view(K, h, w) > 0, hi.expand(K, h, w) + (hi - lo).expand(K, h, w) * 1e-6, m)
    r = _plain(m2, prev_boxes, image_size, threshold=threshold, search=search, scale_step=scale_step)
    return r


ro.read_boxes = read_boxes


class MotionReader(ro.BoxReader):
    def start(self, boxes):
        super().start(boxes)
        self._actual = self.boxes.clone()
        self._v = torch.zeros_like(self.boxes[:, :2])

    def read(self, maps, image_size, windows=None):
        r = super().read(maps, image_size, windows)
        new = r.boxes
        c_old = self._actual[:, :2] + self._actual[:, 2:] / 2
        c_new = new[:, :2] + new[:, 2:] / 2
        self._v = (1 - A) * self._v + A * (c_new - c_old)
        self._actual = new.clone()
        self.boxes = torch.cat([new[:, :2] + self._v, new[:, 2:]], 1)
        return r


import fasttrack.trackers.dintr.tracker as dt
dt.BoxReader = MotionReader
tr = DINTR.pretrained(**extra)
if ":" in names:
    a, b = (int(v) for v in names.split(":"))
    seqs = list(synthetic_split("val", num=b, num_frames=frames, start=a))
else:
    want = names.split(",")
    seqs = [s for s in synthetic_split("val", num=20, num_frames=frames) if s.name[-3:] in want]
per, t0 = {}, time.time()
for s in seqs:
    boxes = tr.run(s, s.gt[0], progress=False)[0]
    per[s.name[-3:]] = round(float(iou(np.asarray(boxes)[1:], np.asarray(s.gt)[1:]).mean()), 3)
print(f"momentum {A} influence {WINF}", extra, names, f"x {frames}", "AO %.3f" % np.mean(list(per.values())),
      per, "%.0f s" % (time.time() - t0), flush=True)
