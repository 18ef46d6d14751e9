"""Search-region crops: the diffusion model sees a square around each target, not the whole frame.

Both papers feed the UNet the whole frame resized to its input size S (64 px for tiny-sd, 512
or 768 for Stable Diffusion). A target then covers as many map cells as the frame's size allows:
a 12 x 17 px target in a 120 x 150 frame is 3 x 4 cells of tiny-sd's 32 x 32 grid, and every
same-looking object anywhere in the frame answers the target's token. Trackers since SiamFC
(Bertinetto et al., 2016) look at a search region instead: a square of side

    L = context * max(w, h)        (w, h: the target's previous box)

centred on the previous box, resized to S x S. With context equal to the readout's `search`
(3) the square holds the whole search window (search x the box) whatever the box's aspect; the
target's longer side covers 1 / context of the input whatever its size in the frame (the token
learned on the first crop sees the same scale later), and objects further than about L / 2 from
it are not in the input at all. Parts of the square outside the frame are filled with the
frame's mean colour (SiamFC's padding), so the padding carries no edge. Downscaling resizes the
whole frame first, with antialiasing (as `sd.preprocess`), then samples the square bilinearly.

Coordinates. A window is (x0, y0, L): the crop's top-left corner and side in image pixels. Maps
read on a crop cover the window; `to_window` / `from_window` move boxes between image pixels and
the window's own pixel frame of side `size` (the readout's virtual image: fasttrack.trackers.
diffusion.readout reads sub-cell edges on a `size` x `size` upsampled map).

Host and device. A crop's geometry (its downscale size, its sampling grid) is host arithmetic,
so `crop_images` takes its windows as host numbers and never reads the device; `crop_windows`
computes the same float32 windows from host boxes (numpy) or device boxes (a tensor), to the
last bit. A tracker frame computes them twice from the previous frame's boxes: on the host from
the copy read back with the previous frame's results, for the crops, and on the device for the
readout, so its only upload is the frame itself.

The settings and their measured effect on the shipped tiny-sd model: tiny_sd.TRACKER_SETTINGS.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["crop_windows", "crop_images", "to_window", "from_window", "check_context", "window_side"]


def window_side(grid) -> int:
    """Side of a window's own pixel frame for maps on an (h, w) grid: 8 pixels per cell, enough
    for the readout's sub-cell edges (the bilinearly upsampled map)."""
    return 8 * max(int(g) for g in grid)


def check_context(context) -> float:
    """The crop context as a float: 0 (whole frame) or >= 1 (a crop at least the box's size);
    ValueError otherwise."""
    if isinstance(context, bool) or not isinstance(context, (int, float)) or not (
            context == 0 or (math.isfinite(context) and context >= 1)):
        raise ValueError(f"context must be 0 (whole frame) or a number >= 1, got {context!r}")
    return float(context)


def crop_windows(boxes, context: float):
    """Square windows around boxes (K, 4) [x, y, w, h] -> (K, 3) float32 [x0, y0, L] with
    L = context * max(w, h) (at least 8 px), centred on each box's centre. A torch tensor gives a
    tensor on its device, a numpy array (or anything numpy takes) a float32 ndarray: the same
    float32 operations in the same order, so the same windows to the last bit (the trackers
    compute a frame's windows on the host for the crops and on the device for the readout)."""
    if isinstance(boxes, torch.Tensor):
        b = boxes.to(torch.float32)
        side = (context * torch.maximum(b[:, 2], b[:, 3])).clamp_min(8.0)
        cx, cy = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
        return torch.stack([cx - side / 2, cy - side / 2, side], 1)
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    # np.float32 scalars: float32 arithmetic as torch's (a Python float times a float32 tensor
    # is computed in float32)
    side = np.maximum(np.float32(context) * np.maximum(b[:, 2], b[:, 3]), np.float32(8.0))
    cx, cy = b[:, 0] + b[:, 2] / np.float32(2), b[:, 1] + b[:, 3] / np.float32(2)
    return np.stack([cx - side / np.float32(2), cy - side / np.float32(2), side], 1).astype(np.float32)


def crop_images(image, windows, size: int, device, dtype) -> torch.Tensor:
    """The K windows of an RGB (H, W, 3) uint8 image -> model inputs (K, 3, size, size) in
    [-1, 1], outside the frame the frame's mean colour (module docstring).
    Pixel centres map as align_corners=False: output column j samples image x = x0 + (j + 1/2) L / size.

    Args:
        image: (H, W, 3) uint8, a numpy array (uploaded here) or a tensor (moved to `device`
            if it is not there: pass the frame already on the device to upload it once).
        windows: (K, 3) [x0, y0, L] host data (numpy float32, as `crop_windows` of host
            boxes; a CPU tensor is taken as its float32 values): each window's geometry (its
            downscale size, its sampling grid) is set from host numbers, so this never reads
            the device.
        size: output side; device, dtype: of the result.
    """
    win = np.asarray(windows, dtype=np.float32).reshape(-1, 3)
    t = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    t = t.to(device=device).permute(2, 0, 1)[None].float()
    H, W = int(t.shape[-2]), int(t.shape[-1])
    out = []
    for x0, y0, side in win.tolist():
        src = t
        f = size / side
        if f < 1:   # antialiased downscale first: bilinear sampling alone would alias textures
            src = F.interpolate(t, size=(max(1, round(H * f)), max(1, round(W * f))), mode="bilinear",
                                align_corners=False, antialias=True)
        Hs, Ws = int(src.shape[-2]), int(src.shape[-1])
        mean = src.mean((2, 3), keepdim=True)
        centres = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) * (side / size)
        gx = (x0 + centres) * (Ws / W) / Ws * 2 - 1        # grid_sample's [-1, 1], align_corners=False
        gy = (y0 + centres) * (Hs / H) / Hs * 2 - 1
        grid = torch.stack([gx[None, :].expand(size, size), gy[:, None].expand(size, size)], -1)[None]
        # zero padding of (image - mean): the mean colour outside the frame, no edge at the border
        out.append(F.grid_sample(src - mean, grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False) + mean)
    x = torch.cat(out, 0)
    return (x / 127.5 - 1.0).clamp_(-1.0, 1.0).to(dtype)


def to_window(boxes: torch.Tensor, windows: torch.Tensor, size: float) -> torch.Tensor:
    """Boxes (K, 4) [x, y, w, h] in image pixels -> the same boxes in each window's frame of
    side `size` (window k's top-left is 0, its side `size`)."""
    w = windows.to(boxes)
    scale = (size / w[:, 2])[:, None]
    return torch.cat([(boxes[:, :2] - w[:, :2]) * scale, boxes[:, 2:] * scale], 1)


def from_window(boxes: torch.Tensor, windows: torch.Tensor, size: float) -> torch.Tensor:
    """Inverse of `to_window`: boxes (K, 4) in the windows' frames -> image pixels. Points
    (K, 2) [x, y] are accepted too (their first two columns move the same way)."""
    w = windows.to(boxes)
    scale = (w[:, 2] / size)[:, None]
    xy = boxes[:, :2] * scale + w[:, :2]
    return torch.cat([xy, boxes[:, 2:] * scale], 1) if boxes.shape[1] == 4 else xy
