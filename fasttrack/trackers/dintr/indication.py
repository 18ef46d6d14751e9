"""DINTR's indications: how a target is injected and what its map is turned into (DINTR paper,
Eq. 3 and Eq. 12; "point", "box" and "mask" of the paper's five representations).

Injection. The seed's extractor phi is "a Gaussian kernel for point, pooling layer for bounding
box and segment". fasttrack turns every indication into a ground-truth map on the attention
grid (`indicator_maps`):
- point: a Gaussian kernel at the point (the box centre at init), sigma = a quarter of the
  box's shorter side (at least one map cell), so the kernel covers the target's core;
- box: the box mask (cell area fractions, `boxes.box_masks`);
- mask: the area-averaged mask (a box mask when no mask is given at init).
The target's condition token is then learned in place on the init frame so that its map
matches this indicator map (the paper's one-shot in-place fine-tuning, restricted to the
condition; the diffusion model stays frozen).

Extraction (Eq. 12), through the diffusion trackers' one readout (diffusion.readout.BoxReader:
the connected region holding the map's peak near the previous box, on the window-normalized
map, then the reader's size model) into
- point: the peak (the box keeps its size and follows the point);
- box: the reader's box (the region's box, its size calibrated, bounded and smoothed);
- mask: the region's pixels at or above the threshold (the box as for "box").
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..diffusion.boxes import box_masks, gaussian_masks
from ..diffusion.readout import BoxReader

__all__ = ["INDICATIONS", "check_indication", "check_masks", "indicator_maps", "extract"]

INDICATIONS = ("point", "box", "mask")


def check_indication(indication) -> str:
    if indication not in INDICATIONS:
        raise ValueError(f"indication must be one of {INDICATIONS}, got {indication!r}")
    return indication


def check_masks(masks, image_size: tuple[int, int]) -> torch.Tensor:
    """Validate init masks: (K, H, W) (or (H, W) for one target) of bools or 0/1 numbers, each
    with at least one pixel, on a frame of size (H, W). Returns (K, H, W) float32 on the CPU."""
    if isinstance(masks, np.ndarray):
        masks = torch.from_numpy(np.ascontiguousarray(masks))
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a numpy array or torch tensor, got {type(masks).__name__}")
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or masks.shape[0] < 1 or tuple(masks.shape[1:]) != tuple(image_size):
        raise ValueError(f"masks must have shape (K, {image_size[0]}, {image_size[1]}) matching the "
                         f"image, got {tuple(masks.shape)}")
    m = masks.detach().to("cpu", torch.float32)
    if not torch.all((m == 0) | (m == 1)):
        raise ValueError("masks must hold only booleans or 0/1 values")
    if not torch.all(m.flatten(1).amax(1) > 0):
        raise ValueError("masks: every target's mask must have at least one pixel")
    return m


def indicator_maps(indication: str, boxes: torch.Tensor, image_size: tuple[int, int],
                   map_size: tuple[int, int], masks: torch.Tensor | None = None) -> torch.Tensor:
    """Ground-truth maps of K targets on the (h, w) attention grid.

    Args:
        indication: "point", "box" or "mask".
        boxes: (K, 4) [x, y, w, h] image pixels (the point is the box centre).
        image_size: (H, W); map_size: (h, w).
        masks: (K, H, W) float 0/1 for "mask" (None: the boxes' masks).
    Returns:
        (K, h, w) float32 in [0, 1].
    """
    check_indication(indication)
    H, W = image_size
    h, w = map_size
    boxes = boxes.to(torch.float32)
    if indication == "point":
        centre = boxes[:, :2] + boxes[:, 2:] / 2
        cell = max(H / h, W / w)
        sigma = (boxes[:, 2:].amin(1) / 4).clamp_min(cell)
        return gaussian_masks(centre, image_size, map_size, sigma)
    if indication == "mask" and masks is not None:
        # Area averaging: each cell gets the fraction of its pixels inside the mask.
        return F.adaptive_avg_pool2d(masks.to(boxes.device, torch.float32)[:, None], (h, w))[:, 0]
    return box_masks(boxes, image_size, map_size)


def extract(indication: str, reader: BoxReader, maps: torch.Tensor, image_size: tuple[int, int],
            windows: torch.Tensor | None = None) -> dict:
    """Map K attention maps (K, h, w) (on a grid over the whole image, or over each target's
    crop window (K, 3) [x0, y0, L] with `windows`: diffusion.crops; not for "mask") to the
    indication's output on the image, through the sequence's `reader` (started at the init
    boxes; it holds the previous boxes and is advanced to this frame's).

    Returns a dict of device tensors: "boxes" (K, 4) float32, "scores" (K,) (readout score),
    "found" (K,) bool (False: nothing to read, the previous box kept), "points" (K, 2) [x, y]
    for "point", "masks" (K, H, W) bool for "mask".
    """
    check_indication(indication)
    if windows is not None and indication == "mask":
        raise ValueError("the mask indication reads whole-frame maps (no crop windows)")
    # the read updates reader.boxes in place: the point's size is taken before it
    wh = reader.boxes[:, 2:].clone() if indication == "point" else None
    r = reader.read(maps, image_size, windows)
    out = {"boxes": r.boxes, "scores": r.scores, "found": r.found}
    if indication == "point":
        out["boxes"] = torch.cat([r.points - wh.to(r.points) / 2, wh.to(r.points)], 1)
        reader.boxes.copy_(out["boxes"])
        out["points"] = r.points
    elif indication == "mask":
        out["masks"] = r.masks
    return out
