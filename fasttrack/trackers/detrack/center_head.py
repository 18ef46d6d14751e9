"""Joint whole-box head for DeTrack (`DeTrackConfig.box_head = "center"`): one centre map over
the search grid, and the box read at its single peak. Not in the DeTrack paper; fasttrack's
option beside the paper's bin decoder (refine.BinMapping), for the failure measured in
DESIGN.md 1.7: the bin decoder decodes x1, y1, x2, y2 independently, so next to a same-texture
copy x1 can land on the target and x2 on the copy's far edge (a 48 px box for a 25 px target,
with almost no probability mass at the true edge); the next crop is centred between the two
and the tracker switches. A peak of one 2-D map picks one object, and the size read at that
peak belongs to it (OSTrack's centre head, Ye et al. 2022, in fasttrack's own form).

With G x G search tokens (G = search_size / patch) and their final features f (B, G*G, C):

    h       = conv3x3(GELU(conv3x3(LN(f) as a (C, G, G) image)))      the tower, C channels
    logit_i = w_s . h_i + <W_q r, W_k LN(f)_i> / sqrt(C)                r = mean of the 4 refined box tokens
    p       = softmax_i(logit)                                         one distribution over the grid
    i*      = argmax_i p_i * hann_i^window                             (window = 0: plain argmax)
    centre  = ((i* mod G) + sigmoid(o_x), (i* div G) + sigmoid(o_y)) / G
    size    = sigmoid(s_w), sigmoid(s_h)                               fractions of the crop
    iou     = sigmoid(MLP([h_i*, r]))                                  the gate's IoU score

(o, s: 1x1 convolutions of h.) The query term ties the map to DeTrack's denoised box tokens:
the tokens, refined with the trajectory, say which object is meant, the tower where objects
are. hann_i is the Hann window at token centres, 0.5 - 0.5 cos(2 pi (c + 0.5) / G) per axis,
never 0 at the border (OSTrack's window is 0 there). Training (train.py): soft cross-entropy
of p against a Gaussian at the true centre, L1 + GIoU of the box read at the true centre's
cell, MSE of the IoU score against the IoU of the box read at the predicted peak.

The visual stream never reads the box tokens (DenoisingBlock), so the box depends on the box
branch only through which cell wins; the fused box-branch kernels change the peak's
probability and the IoU score in the last bits, the box itself only if two cells tie.
Measured (tiny, synthetic, one CPU thread; benchmarks/results/detrack-tiny-training-cpu-2026-
12-06-center/): held-out test AO 0.808 and 0.856 for two seeds against 0.776 with the bins.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CenterHead", "hann_grid", "center_targets"]


def hann_grid(grid: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(grid * grid,) row-major product of per-axis Hann weights at the token centres."""
    c = (torch.arange(grid, device=device, dtype=torch.float64) + 0.5) / grid
    w = 0.5 - 0.5 * torch.cos(2 * math.pi * c)
    return (w[:, None] * w[None, :]).flatten().to(dtype)


def center_targets(gt_xyxy: torch.Tensor, grid: int, min_sigma: float = 0.5) -> tuple:
    """Training targets of a grid x grid centre map for (B, 4) crop-normalized boxes:
    (cell (B,) long index of the cell holding the box centre, soft (B, grid * grid) Gaussian at
    the centre, sigma = max(min_sigma, sqrt(w h) G / 6) cells, summing to 1)."""
    c = (gt_xyxy[:, :2] + gt_xyxy[:, 2:]) / 2 * grid                       # (B, 2) in cells
    cell_xy = c.floor().clamp(0, grid - 1).long()
    cell = cell_xy[:, 1] * grid + cell_xy[:, 0]
    wh = (gt_xyxy[:, 2:] - gt_xyxy[:, :2]).clamp_min(0) * grid
    sigma = (wh.prod(-1).sqrt() / 6).clamp_min(min_sigma)                    # (B,)
    pos = torch.arange(grid, device=gt_xyxy.device, dtype=gt_xyxy.dtype) + 0.5
    dx = (pos[None, :] - c[:, :1]) ** 2                                      # (B, G)
    dy = (pos[None, :] - c[:, 1:]) ** 2
    g = torch.exp(-(dy[:, :, None] + dx[:, None, :]) / (2 * sigma[:, None, None] ** 2))
    g = g.flatten(1)
    return cell, g / g.sum(-1, keepdim=True)


class CenterHead(nn.Module):
    """forward(f (B, G*G, C) final search-token features, r (B, 4, C) refined box tokens,
    window: float = 0, scale: (B, G*G) per-token multipliers or None) -> dict with
        logits (B, G*G) centre-map logits, xyxy (B, 4) the box at the peak (crop-normalized),
        peak (B,) the peak's probability, iou_score (B,) in (0, 1), cell (B,) the peak's index,
        and the raw maps offset, size (B, 2, G*G) for `box_at`.
    `scale` multiplies each token's features AFTER the LayerNorm (DMTrack's feature filter: a
    scaling before it would be normalized away, leaving the head blind to the mask)."""

    def __init__(self, dim: int, grid: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.grid = dim, grid
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)
        self.maps = nn.Conv2d(dim, 5, 1)              # score, offset x, y, size w, h
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.iou1 = nn.Linear(2 * dim, dim)
        self.iou2 = nn.Linear(dim, 1)
        self.register_buffer("hann", hann_grid(grid), persistent=False)

    def box_at(self, out: dict, cell: torch.Tensor) -> torch.Tensor:
        """(B, 4) crop-normalized xyxy read at grid cells `cell` (B,) of a forward's maps."""
        G = self.grid
        idx = cell[:, None, None].expand(-1, 2, 1)
        off = torch.sigmoid(out["offset"].gather(2, idx)[..., 0].float())
        size = torch.sigmoid(out["size"].gather(2, idx)[..., 0].float())
        cxy = torch.stack([cell % G, torch.div(cell, G, rounding_mode="floor")], -1).float()
        centre = (cxy + off) / G
        return torch.cat([centre - size / 2, centre + size / 2], -1)

    def forward(self, f: torch.Tensor, r: torch.Tensor, window: float = 0.0,
                scale: torch.Tensor | None = None) -> dict:
        B, N, C = f.shape
        G = self.grid
        if N != G * G:
            raise ValueError(f"f must hold {G * G} search tokens (a {G} x {G} grid), got {N}")
        fn = self.norm(f)
        if scale is not None:
            fn = fn * scale[..., None].to(fn.dtype)
        img = fn.transpose(1, 2).reshape(B, C, G, G)
        h = self.conv2(F.gelu(self.conv1(img)))                              # (B, C, G, G)
        maps = self.maps(h).flatten(2)                                        # (B, 5, N)
        query = self.q(r.mean(1))                                             # (B, C)
        match = torch.matmul(self.k(fn), query[:, :, None])[..., 0] / math.sqrt(C)
        logits = (maps[:, 0] + match).float()
        prob = logits.softmax(-1)
        response = prob * self.hann.to(prob.dtype) ** window if window else prob
        cell = response.argmax(-1)
        out = {"logits": logits, "offset": maps[:, 1:3], "size": maps[:, 3:5], "cell": cell,
               "peak": prob.gather(1, cell[:, None])[:, 0]}
        out["xyxy"] = self.box_at(out, cell)
        h_peak = h.flatten(2).gather(2, cell[:, None, None].expand(-1, C, 1))[..., 0]
        feat = torch.cat([h_peak, r.mean(1)], -1)
        out["iou_score"] = torch.sigmoid(self.iou2(F.relu(self.iou1(feat)))).squeeze(-1).float()
        return out
