"""Between attention maps and boxes, points and masks (shared by Diff-Tracker and DINTR).

Everything is batched over targets, stays on the maps' device and never synchronizes with the
host: a tracker converts its final (K, 4) boxes to numpy once per frame.

Coordinates follow DESIGN section 3: a box [x, y, w, h] covers the continuous region
x <= u < x + w, y <= v < y + h of the pixel grid, pixel (row r, col c) being the unit square
[c, c + 1) x [r, r + 1). A map of size (h, w) over an image of size (H, W) has cells of size
(H / h, W / w) in image pixels (the bilinear, align_corners=False convention of the resizes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["normalize_maps", "upsample_maps", "maps_to_boxes", "maps_to_points", "box_masks",
           "gaussian_masks", "masks_to_boxes", "mass_inside"]


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalize each map to [0, 1]. maps: (K, h, w) -> (K, h, w); a constant map
    becomes all zeros (no pixel is "activated" more than another)."""
    flat = maps.flatten(1)
    lo = flat.amin(1).view(-1, 1, 1)
    hi = flat.amax(1).view(-1, 1, 1)
    return (maps - lo) / (hi - lo).clamp_min(eps)


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of (K, h, w) maps to (K, H, W)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear",
                         align_corners=False)[:, 0]


def _first_last(active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """active (K, L) bool -> index of the first and last True per row (0 and L-1 when none)."""
    L = active.shape[1]
    a = active.to(torch.uint8)
    first = a.argmax(1)
    last = L - 1 - a.flip(1).argmax(1)
    return first, last


def maps_to_boxes(maps: torch.Tensor, threshold: float = 0.5, fallback: torch.Tensor | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Smallest box around the pixels of each normalized map at or above `threshold`.

    Args:
        maps: (K, H, W) maps in [0, 1] on the image grid (normalize and upsample first).
        threshold: activation level in (0, 1].
        fallback: (K, 4) boxes returned for maps with no activated pixel (a constant map);
            default: the whole frame.
    Returns:
        boxes (K, 4) float32 [x, y, w, h] in pixels and found (K,) bool.
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    K, H, W = maps.shape
    active = maps >= threshold
    rows, cols = active.any(2), active.any(1)
    y0, y1 = _first_last(rows)
    x0, x1 = _first_last(cols)
    boxes = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], 1).to(torch.float32)
    found = rows.any(1)
    if fallback is None:
        fallback = boxes.new_tensor([0.0, 0.0, float(W), float(H)]).expand(K, 4)
    return torch.where(found[:, None], boxes, fallback.to(boxes)), found


def maps_to_points(maps: torch.Tensor) -> torch.Tensor:
    """Location of each map's maximum, as the pixel centre (x + 0.5, y + 0.5).
    maps: (K, H, W) -> (K, 2) float32 [x, y]; ties go to the first pixel in raster order."""
    K, H, W = maps.shape
    idx = maps.flatten(1).argmax(1)
    return torch.stack([idx % W, idx // W], 1).to(torch.float32) + 0.5


def _overlap(lo: torch.Tensor, hi: torch.Tensor, n: int, cell: torch.Tensor) -> torch.Tensor:
    """Length of [lo, hi) inside each of n cells of size `cell`, as a fraction of the cell.
    lo, hi, cell: (K,) -> (K, n)."""
    edges = torch.arange(n + 1, device=lo.device, dtype=torch.float32)[None] * cell[:, None]
    inter = torch.minimum(edges[:, 1:], hi[:, None]) - torch.maximum(edges[:, :-1], lo[:, None])
    return inter.clamp_min(0) / cell[:, None]


def box_masks(boxes: torch.Tensor, image_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Ground-truth maps for boxes: each cell of a (h, w) grid over the (H, W) image gets the
    fraction of its area inside the box (1 inside, 0 outside, fractions on the border).

    Args:
        boxes: (K, 4) [x, y, w, h] in image pixels; image_size: (H, W); size: (h, w).
    Returns:
        (K, h, w) float32.
    """
    boxes = boxes.to(torch.float32)
    H, W = image_size
    h, w = size
    K = boxes.shape[0]
    cy = boxes.new_full((K,), H / h)
    cx = boxes.new_full((K,), W / w)
    fy = _overlap(boxes[:, 1], boxes[:, 1] + boxes[:, 3], h, cy)
    fx = _overlap(boxes[:, 0], boxes[:, 0] + boxes[:, 2], w, cx)
    return fy[:, :, None] * fx[:, None, :]


def gaussian_masks(points: torch.Tensor, image_size: tuple[int, int], size: tuple[int, int],
                   sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian kernels exp(-d^2 / (2 sigma^2)) around points, evaluated at the cell centres of
    a (h, w) grid; distances in image pixels. points: (K, 2) [x, y]; sigma: (K,) pixels.
    Returns (K, h, w) float32 with peak 1 at the point."""
    H, W = image_size
    h, w = size
    pts = points.to(torch.float32)
    ys = (torch.arange(h, device=pts.device, dtype=torch.float32) + 0.5) * (H / h)
    xs = (torch.arange(w, device=pts.device, dtype=torch.float32) + 0.5) * (W / w)
    dy = ys[None, :, None] - pts[:, 1, None, None]
    dx = xs[None, None, :] - pts[:, 0, None, None]
    s2 = 2 * sigma.to(torch.float32)[:, None, None] ** 2
    return torch.exp(-(dx * dx + dy * dy) / s2)


def masks_to_boxes(masks: torch.Tensor, fallback: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes of boolean masks (K, H, W) -> (K, 4) float32 and found (K,) bool."""
    return maps_to_boxes(masks.to(torch.float32), 1.0, fallback)


def mass_inside(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Fraction of each non-negative map's total mass inside its box: a confidence in [0, 1].
    maps: (K, H, W) on the image grid; boxes: (K, 4) pixels. Returns (K,) float32."""
    K, H, W = maps.shape
    inside = box_masks(boxes, (H, W), (H, W))
    m = maps.to(torch.float32).clamp_min(0)
    total = m.flatten(1).sum(1)
    return (m * inside).flatten(1).sum(1) / total.clamp_min(1e-12)
