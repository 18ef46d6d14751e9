"""Experiment: in a region larger than the expected one (a copy merged with the target), put the
centre at the point nearest the motion prediction where an expected-size box still lies inside
the region (the region's centre when the region has the expected size).
python clamp_val.py NAMES FRAMES "[(slack, [gate,] {settings}), ...]"   (slack 0, no gate: the
library readout; gate: hold the size on an axis measured larger than gate x the previous)
NAMES: comma-separated "val" indices or "0-19"."""
import sys

import torch

import fasttrack.trackers.dintr.tracker as dt
from subset_val import score
from fasttrack.trackers.diffusion.crops import from_window, to_window, window_side
from fasttrack.trackers.diffusion.readout import BoxReader, read_boxes

SLACK = [0.0]
GATE = [float("inf")]   # hold the size on an axis whose measurement exceeds GATE x the previous


class ClampReader(BoxReader):
    def read_window(self, maps, prev):
        """The region in window coordinates (subclasses choose another component)."""
        side = window_side(maps.shape[-2:])
        return read_boxes(maps, prev, (side, side), threshold=self.threshold, search=self.search)

    def read(self, maps, image_size, windows=None):
        last = self.boxes.to(maps.device)
        prev = self.predicted.to(maps.device)
        side = window_side(maps.shape[-2:])
        win = windows.to(device=maps.device, dtype=torch.float32)
        r = self.read_window(maps, to_window(prev, win, side))
        r = r._replace(boxes=from_window(r.boxes, win, side), points=from_window(r.points, win, side))
        region = r.boxes[:, 2:].clamp_min(1.0)
        centre = r.boxes[:, :2] + r.boxes[:, 2:] / 2
        if SLACK[0] and self._calibrated.any():
            expected = prev[:, 2:] / self._ratio
            slack = SLACK[0] * (region - expected).clamp_min(0) / 2
            pc = prev[:, :2] + prev[:, 2:] / 2
            clamped = torch.minimum(torch.maximum(pc, centre - slack), centre + slack)
            centre = torch.where(self._calibrated[:, None], clamped, centre)
        measured = region * self._ratio
        bounded = torch.minimum(torch.maximum(measured, prev[:, 2:] / self.scale_step),
                                prev[:, 2:] * self.scale_step)
        bounded = torch.where(measured > GATE[0] * prev[:, 2:], prev[:, 2:], bounded)
        wh = prev[:, 2:].pow(1 - self.size_lr) * bounded.pow(self.size_lr)
        first = (r.found & ~self._calibrated)[:, None]
        self._ratio = torch.where(first, prev[:, 2:] / region, self._ratio)
        wh = torch.where(first, prev[:, 2:], wh)
        self._calibrated = self._calibrated | r.found
        boxes = torch.where(r.found[:, None], torch.cat([centre - wh / 2, wh], 1), prev)
        step = (boxes[:, :2] + boxes[:, 2:] / 2) - (last[:, :2] + last[:, 2:] / 2)
        v = (1 - self.motion) * self.velocity.to(step) + self.motion * step
        c = boxes[:, :2] + boxes[:, 2:] / 2
        size = torch.tensor([float(image_size[1]), float(image_size[0])], device=v.device)
        self.velocity = torch.minimum(torch.maximum(c + v, torch.zeros_like(size)), size) - c
        self.boxes = boxes
        return r._replace(boxes=boxes)


def make(v):
    """v = (slack, [gate,] settings)."""
    SLACK[0], GATE[0] = v[0], v[1] if len(v) == 3 else float("inf")
    return dt.DINTR.pretrained(**v[-1])


if __name__ == "__main__":
    dt.BoxReader = ClampReader
    score(make, eval(sys.argv[3]), lambda v: f"slack {v[0]} gate {GATE[0]} {v[-1]}")
