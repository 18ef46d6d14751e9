"""Experiment: place DINTR's box centre inside the attention region by matching the init frame's
VAE latents of the target (a 4 x th x tw template in the crop, whose scale the crop keeps) against
the new crop's latents (normalized cross-correlation), instead of the region's centre.
python latent_template_val.py NAMES FRAMES "[(mode, {settings}), ...]"
mode 0: the library readout; 1: the NCC peak among positions whose box centre lies in the region
(grown by one cell); 2: the NCC peak anywhere in the search window."""
import sys

import torch
import torch.nn.functional as F

import fasttrack.trackers.dintr.tracker as dt
from subset_val import score
from fasttrack.trackers.diffusion.crops import from_window, to_window, window_side
from fasttrack.trackers.diffusion.readout import BoxReader

MODE = [0]


def ncc(z, t):
    """z (4, h, w), t (4, th, tw) -> (h - th + 1, w - tw + 1) normalized cross-correlation."""
    t = t - t.mean()
    n = t.numel()
    ones = torch.ones_like(t)[None]
    s1 = F.conv2d(z[None], ones)[0, 0]
    s2 = F.conv2d((z * z)[None], ones)[0, 0]
    num = F.conv2d(z[None], t[None])[0, 0]
    var = (s2 - s1 * s1 / n).clamp_min(1e-8)
    return num / (var.sqrt() * t.norm().clamp_min(1e-8))


class TemplateReader(BoxReader):
    z = template = None

    def read(self, maps, image_size, windows=None):
        r = super().read(maps, image_size, windows)
        if not MODE[0] or self.template is None:
            return r
        K, h, w = maps.shape
        side = window_side((h, w))
        win = windows.to(torch.float32)
        cell = side / w
        boxes = r.boxes.clone()
        for k in range(K):
            t = self.template[k]
            th, tw = t.shape[-2:]
            score = ncc(self.z[k].float(), t)                      # top-left positions
            P, Q = score.shape
            cy = (torch.arange(P)[:, None] + th / 2) * cell * torch.ones(1, Q)
            cx = (torch.arange(Q)[None] + tw / 2) * cell * torch.ones(P, 1)
            if MODE[0] == 1:
                reg = r.masks[k].view(h, side // h, w, side // w).any(3).any(1).float()
                reg = F.max_pool2d(reg[None, None], 3, 1, 1)[0, 0] > 0
                ok = reg[(cy / cell).long().clamp_max(h - 1), (cx / cell).long().clamp_max(w - 1)]
            else:
                ok = torch.ones_like(score, dtype=torch.bool)
            if not ok.any():
                continue
            i = int(torch.where(ok, score, torch.tensor(-9.0)).flatten().argmax())
            c = torch.tensor([[float(cx.flatten()[i]), float(cy.flatten()[i])]])
            c_img = from_window(c, win[k:k + 1], side)[0]
            boxes[k, :2] = c_img - boxes[k, 2:] / 2
        # the velocity and `boxes` follow the moved centre
        if self.motion:
            shift = (boxes[:, :2] - r.boxes[:, :2])
            self.velocity = self.velocity + self.motion * shift
        self.boxes = boxes
        return r._replace(boxes=boxes)


_orig_maps, _orig_start = dt.DINTR._maps, dt.DINTR._start


def _maps(self, z, tokens, labels=None):
    if labels is None and getattr(self, "_reader", None) is not None:
        self._reader.z = z
    return _orig_maps(self, z, tokens, labels)


def _start(self, image, boxes):
    _orig_start(self, image, boxes)
    b = torch.as_tensor(boxes, dtype=torch.float32)
    win = self._windows(b)
    side = window_side((self.resolution,) * 2)
    bw = to_window(b, win, side) / (side / self.resolution)      # in cells
    temps = []
    for k in range(b.shape[0]):
        x0, y0 = int(round(float(bw[k, 0]))), int(round(float(bw[k, 1])))
        x1, y1 = int(round(float(bw[k, 0] + bw[k, 2]))), int(round(float(bw[k, 1] + bw[k, 3])))
        temps.append(self._z[k, :, max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)].float())
    self._reader.template = temps


dt.BoxReader = TemplateReader
dt.DINTR._maps, dt.DINTR._start = _maps, _start

def make(v):
    """v = (mode, settings)."""
    MODE[0] = v[0]
    return dt.DINTR.pretrained(**v[1])


if __name__ == "__main__":
    score(make, eval(sys.argv[3]), lambda v: f"mode {v[0]} {v[1]}")
