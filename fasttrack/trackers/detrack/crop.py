"""Device-side OSTrack cropping, normalization and map-back, batched over targets.

OSTrack's `sample_target` (pytracking lineage) crops a square of side
crop_sz = ceil(sqrt(w * h) * factor) whose top-left corner is (round(cx - crop_sz / 2),
round(cy - crop_sz / 2)), zero-pads what falls outside the frame and resizes the square to
out_size x out_size with bilinear interpolation (cv2.INTER_LINEAR: output pixel j samples the
crop at (j + 0.5) * crop_sz / out_size - 0.5). Here the crop and the resize are one
`grid_sample` per frame for all targets, straight from the full frame on the device
(bilinear, zero padding, align_corners=False), so no crop ever goes through the host. The only
difference from cv2 is at the crop's own border: cv2 replicates the crop's edge pixels, the
sampler reads the real neighbours in the frame (the more faithful value).
Then pixels are scaled to [0, 1] and normalized with the ImageNet mean / std (zero padding
happens before normalization, as in OSTrack).

All coordinates are float32 tensors; boxes are [x, y, w, h] in frame pixels unless the name
says xyxy (corners, normalized to the crop: 0 = crop's left / top edge, 1 = right / bottom).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "frame_to_tensor", "crop_windows", "crop_and_resize",
           "frame_to_crop", "crop_to_frame", "clip_boxes"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def frame_to_tensor(image: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 tensor -> (1, 3, H, W) float32 on the same device, values 0 .. 255."""
    return image.permute(2, 0, 1).unsqueeze(0).float()


def crop_windows(boxes: torch.Tensor, factor: float):
    """Square crop windows around boxes (K, 4) [x, y, w, h]: returns x0, y0, side, each (K,)
    float32, as OSTrack: side = ceil(sqrt(w h) factor) (at least 1), x0 = round(cx - side / 2).
    torch.round rounds half to even like Python's round, which OSTrack uses."""
    x, y, w, h = boxes.float().unbind(-1)
    side = torch.ceil(torch.sqrt(w * h) * factor).clamp_min(1.0)
    x0 = torch.round(x + 0.5 * w - 0.5 * side)
    y0 = torch.round(y + 0.5 * h - 0.5 * side)
    return x0, y0, side


def crop_and_resize(frame: torch.Tensor, boxes: torch.Tensor, factor: float, out_size: int,
                    dtype: torch.dtype = torch.float32):
    """Crop K windows out of one frame and resize them.

    frame: (1, 3, H, W) float (0 .. 255); boxes: (K, 4) [x, y, w, h] float.
    Returns (crops (K, 3, out_size, out_size) normalized, in `dtype`; x0, y0, side (K,))."""
    K = boxes.shape[0]
    H, W = frame.shape[-2:]
    x0, y0, side = crop_windows(boxes, factor)
    j = (torch.arange(out_size, device=frame.device, dtype=torch.float32) + 0.5) / out_size
    # source pixel coordinate of each output pixel centre, in frame pixels
    sx = x0[:, None] + j[None, :] * side[:, None] - 0.5
    sy = y0[:, None] + j[None, :] * side[:, None] - 0.5
    # grid_sample(align_corners=False): normalized g = (2 * pixel + 1) / size - 1
    gx = (2.0 * sx + 1.0) / W - 1.0
    gy = (2.0 * sy + 1.0) / H - 1.0
    grid = torch.stack([gx[:, None, :].expand(K, out_size, out_size),
                        gy[:, :, None].expand(K, out_size, out_size)], dim=-1)
    crops = F.grid_sample(frame.expand(K, -1, -1, -1), grid, mode="bilinear",
                          padding_mode="zeros", align_corners=False)
    # Per-channel affine with Python scalars: building mean / std tensors here would be a
    # host-to-device copy, which a CUDA-graph capture of the step does not allow.
    norm = [crops[:, c:c + 1] * (1.0 / (255.0 * s)) - m / s
            for c, (m, s) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))]
    return torch.cat(norm, 1).to(dtype), x0, y0, side


def frame_to_crop(boxes: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor,
                  side: torch.Tensor) -> torch.Tensor:
    """Frame boxes (K, ..., 4) [x, y, w, h] -> xyxy normalized to each target's crop window
    (x0, y0, side (K,))."""
    shape = (-1,) + (1,) * (boxes.dim() - 2)
    x0, y0, side = x0.view(shape), y0.view(shape), side.view(shape)
    x, y, w, h = boxes.float().unbind(-1)
    return torch.stack([(x - x0) / side, (y - y0) / side, (x + w - x0) / side,
                        (y + h - y0) / side], -1)


def crop_to_frame(xyxy: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor,
                  side: torch.Tensor) -> torch.Tensor:
    """Crop-normalized corners (K, 4) -> frame boxes (K, 4) [x, y, w, h]. The corners are
    sorted first, so a prediction with x2 < x1 still gives a box with w >= 0."""
    x1 = torch.minimum(xyxy[:, 0], xyxy[:, 2])
    x2 = torch.maximum(xyxy[:, 0], xyxy[:, 2])
    y1 = torch.minimum(xyxy[:, 1], xyxy[:, 3])
    y2 = torch.maximum(xyxy[:, 1], xyxy[:, 3])
    return torch.stack([x0 + x1 * side, y0 + y1 * side, (x2 - x1) * side, (y2 - y1) * side], -1)


def clip_boxes(boxes: torch.Tensor, height: int, width: int, margin: float = 10.0) -> torch.Tensor:
    """OSTrack's clip_box: keep the box inside the (height, width) frame with at least
    `margin` pixels of width and height (margin shrinks to the frame for frames under it), so
    the next crop is never empty. boxes (K, 4) [x, y, w, h] -> (K, 4)."""
    mw, mh = min(margin, float(width)), min(margin, float(height))
    x1, y1, w, h = boxes.unbind(-1)
    x2, y2 = x1 + w, y1 + h
    x1 = x1.clamp(0.0, width - mw)
    x2 = x2.clamp(mw, float(width))
    y1 = y1.clamp(0.0, height - mh)
    y2 = y2.clamp(mh, float(height))
    return torch.stack([x1, y1, (x2 - x1).clamp_min(mw), (y2 - y1).clamp_min(mh)], -1)
