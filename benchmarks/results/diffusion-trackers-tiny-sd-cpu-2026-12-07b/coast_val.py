"""DINTR closed-loop AO on "val" with the shipped settings plus "coast through merges" (script-level
experiment, one torch thread): python coast_val.py NAMES FRAMES TAU ['{settings}']
  NAMES: comma-separated val indices ('002,017').
  TAU: when the read region is more than TAU x the expected region (the previous box / the
    calibrated ratio) in width or height -- the target merged with a copy -- the frame's box is
    the motion prediction and the velocity is kept (TAU = inf: the shipped reader)."""
import sys
import time

import numpy as np
import torch

import fasttrack.trackers.diffusion.readout as ro
import fasttrack.trackers.dintr.tracker as dt
from fasttrack.data.synthetic import synthetic_split
from fasttrack.eval.metrics import iou
from fasttrack.trackers.diffusion.crops import from_window, to_window, window_side

torch.set_num_threads(1)
names, frames, TAU = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
extra = eval(sys.argv[4]) if len(sys.argv) > 4 else {}
COASTED = []


class CoastReader(ro.BoxReader):
    def read(self, maps, image_size, windows=None):
        last = self.boxes.to(maps.device)
        prev = self.predicted.to(maps.device)
        side = window_side(maps.shape[-2:])
        win = windows.to(device=maps.device, dtype=torch.float32)
        r = ro.read_boxes(maps, to_window(prev, win, side), (side, side), threshold=self.threshold,
                          search=self.search)
        r = r._replace(boxes=from_window(r.boxes, win, side), points=from_window(r.points, win, side))
        region = r.boxes[:, 2:].clamp_min(1.0)
        merged = (region > TAU * prev[:, 2:] / self._ratio).any(1) & self._calibrated
        found = r.found & ~merged
        COASTED.append(int(merged.sum()))
        centre = r.boxes[:, :2] + r.boxes[:, 2:] / 2
        measured = region * self._ratio
        bounded = torch.minimum(torch.maximum(measured, prev[:, 2:] / self.scale_step), prev[:, 2:] * self.scale_step)
        wh = prev[:, 2:].pow(1 - self.size_lr) * bounded.pow(self.size_lr)
        if self.calibrate:
            first = (found & ~self._calibrated)[:, None]
            self._ratio = torch.where(first, prev[:, 2:] / region, self._ratio)
            wh = torch.where(first, prev[:, 2:], wh)
            self._calibrated = self._calibrated | found
        boxes = torch.where(found[:, None], torch.cat([centre - wh / 2, wh], 1), prev)
        if self.motion:
            step = (boxes[:, :2] + boxes[:, 2:] / 2) - (last[:, :2] + last[:, 2:] / 2)
            v = (1 - self.motion) * self.velocity.to(step) + self.motion * step
            c = boxes[:, :2] + boxes[:, 2:] / 2
            size = torch.tensor([float(image_size[1]), float(image_size[0])])
            self.velocity = torch.minimum(torch.maximum(c + v, torch.zeros_like(size)), size) - c
        self.boxes = boxes
        return r._replace(boxes=boxes)


dt.BoxReader = CoastReader
tr = dt.DINTR.pretrained(**extra)
per, t0 = {}, time.time()
for s in (s for s in synthetic_split("val", num=20, num_frames=frames) if s.name[-3:] in names.split(",")):
    boxes = tr.run(s, s.gt[0], progress=False)[0]
    per[s.name[-3:]] = round(float(iou(np.asarray(boxes)[1:], np.asarray(s.gt)[1:]).mean()), 3)
print(f"coast tau {TAU}", extra, names, f"x {frames}", "AO %.3f" % np.mean(list(per.values())), per,
      f"coasted frames {sum(COASTED)}", "%.0f s" % (time.time() - t0), flush=True)
