"""Experiment: read the window's component nearest the motion prediction instead of the one
holding the peak (components: 4-connected cells of the window-normalized map >= threshold whose
own peak is >= MINPEAK), plus the merge clamp of clamp_val.py.
python nearest_val.py NAMES FRAMES "[(slack, minpeak, {settings}), ...]"  (minpeak > 1: the peak's)"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

import fasttrack.trackers.dintr.tracker as dt
from clamp_val import SLACK, ClampReader
from subset_val import score
from fasttrack.trackers.diffusion.boxes import _first_last
from fasttrack.trackers.diffusion.crops import window_side
from fasttrack.trackers.diffusion.readout import Readout, search_window

MINPEAK = [2.0]


def components(active):
    """(h, w) bool -> (h, w) long labels (0: inactive), 4-connected, by max propagation."""
    h, w = active.shape
    lab = (torch.arange(1, h * w + 1).view(h, w) * active).float()
    for _ in range(h + w):
        p = F.pad(lab[None, None], (1, 1, 1, 1))[0, 0]
        nb = torch.stack([p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]).amax(0)
        new = nb * active
        if torch.equal(new, lab):
            break
        lab = new
    return lab.long()


def read_choose(maps, prev, size, threshold, search):
    K, h, w = maps.shape
    H = W = size
    m = maps.float()
    window = search_window(prev, (H, W), (h, w), float(search))
    boxes, points, found, scores = [], [], [], []
    for k in range(K):
        mk, wk = m[k], window[k]
        lo, hi = mk[wk].min(), mk[wk].max()
        norm = torch.where(wk, ((mk - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1), torch.zeros_like(mk))
        active = (norm >= threshold) & wk
        lab = components(active)
        pc = prev[k, :2] + prev[k, 2:] / 2
        cell = torch.tensor([W / w, H / h])
        best, bestkey = None, None
        peak_all = int(torch.where(wk, mk, torch.tensor(-float("inf"))).flatten().argmax())
        for L in lab.unique().tolist():
            if L == 0:
                continue
            comp = lab == L
            pk = float(norm[comp].max())
            has_peak = bool(comp.flatten()[peak_all])
            if not has_peak and pk < MINPEAK[0]:
                continue
            ys, xs = comp.nonzero(as_tuple=True)
            x0, x1 = xs.min() * cell[0], (xs.max() + 1) * cell[0]
            y0, y1 = ys.min() * cell[1], (ys.max() + 1) * cell[1]
            dx = max(float(x0 - pc[0]), 0.0, float(pc[0] - x1))
            dy = max(float(y0 - pc[1]), 0.0, float(pc[1] - y1))
            key = (np.hypot(dx, dy), -pk)
            if bestkey is None or key < bestkey:
                best, bestkey = comp, key
        if best is None:                       # a constant window: nothing to read
            boxes.append(prev[k].clone()); points.append(pc.clone()); found.append(False); scores.append(0.0)
            continue
        region = best.float()[None, None]
        near = F.max_pool2d(region, 3, stride=1, padding=1)
        up = F.interpolate(norm[None, None], size=(H, W), mode="bilinear", align_corners=False)[0, 0]
        allowed = F.interpolate(near, size=(H, W), mode="nearest-exact")[0, 0] > 0
        pidx = int(torch.where(best, norm, torch.tensor(-1.0)).flatten().argmax())
        seed = torch.zeros(h * w)
        seed[pidx] = 1
        peak_pix = F.interpolate(seed.view(1, 1, h, w), size=(H, W), mode="nearest-exact")[0, 0] > 0
        pix = (up >= threshold) & allowed | peak_pix
        y0, y1 = _first_last(pix.any(1)[None])
        x0, x1 = _first_last(pix.any(0)[None])
        boxes.append(torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], 1).float()[0])
        points.append(torch.tensor([pidx % w + 0.5, pidx // w + 0.5]) * cell)
        found.append(bool(hi > lo))
        scores.append(1.0)
    return Readout(torch.stack(boxes), torch.tensor(scores), torch.stack(points), None,
                   torch.tensor(found))


class NearestReader(ClampReader):
    def read_window(self, maps, prev):
        return read_choose(maps, prev, window_side(maps.shape[-2:]), self.threshold, self.search)


def make(v):
    """v = (slack, minpeak, settings)."""
    SLACK[0], MINPEAK[0] = v[0], v[1]
    return dt.DINTR.pretrained(**v[2])


if __name__ == "__main__":
    dt.BoxReader = NearestReader
    score(make, eval(sys.argv[3]), lambda v: f"slack {v[0]} minpeak {v[1]} {v[2]}")
