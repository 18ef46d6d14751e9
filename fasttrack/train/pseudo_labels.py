"""Pseudo-labels for unlabeled video: boxes from motion, for training Diff-Tracker's updater.

Diff-Tracker trains its online prompt updater on pseudo-labels "generated using an optical flow
model" over unlabeled video (the paper, section 4). No optical-flow model ships offline, so
fasttrack labels motion the classical way, which is what a flow field reduces to for a static
camera: the background is the per-pixel temporal median of the clip, the motion map is each
frame's distance to it, |frame - median| summed over channels and averaged over 2 x 2 cells
(`cell`), and the box is read from the motion map by the diffusion trackers' own readout
(fasttrack.trackers.diffusion.readout.read_boxes: the connected region holding the peak near the
previous box, window-normalized, its pixels at or above `threshold`). Frame 0 has no previous
box unless one is given: its window is the whole frame, so the label follows the strongest
moving thing.

This fits static cameras (the synthetic scenes; fixed surveillance-like video); on a moving
camera the median is no background and the labels are noise, so train on labeled data there.
`label_quality` reports the labels' IoU to ground truth where it exists.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..trackers.diffusion.readout import read_boxes

__all__ = ["motion_pseudo_labels", "pseudo_label_sequence"]


def motion_pseudo_labels(frames, first_box=None, *, cell: int = 2, threshold: float = 0.4,
                         search: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the moving target of a static-camera clip.

    Args:
        frames: a sequence of N >= 3 RGB images (H, W, 3) uint8, all the same size.
        first_box: [x, y, w, h] of the target in frame 0 (None: the strongest moving region).
        cell: the motion map's cell size in pixels.
        threshold, search: the readout's (fasttrack.trackers.diffusion.readout).
    Returns:
        boxes (N, 4) float32 [x, y, w, h] and scores (N,) float32 (the readout's, 0 where the
        frame shows no motion and the previous box is kept).
    """
    imgs = np.stack([np.asarray(f) for f in frames])
    if imgs.ndim != 4 or imgs.shape[-1] != 3 or imgs.shape[0] < 3:
        raise ValueError(f"frames must be at least 3 RGB images of one size, got shape {imgs.shape}")
    if not isinstance(cell, int) or cell < 1:
        raise ValueError(f"cell must be an int >= 1, got {cell!r}")
    N, H, W, _ = imgs.shape
    x = torch.from_numpy(imgs).float()
    background = x.median(0).values
    motion = (x - background).abs().sum(-1)[:, None]                       # (N, 1, H, W)
    # Whole cells only: the readout's grid covers (h cell, w cell) pixels from the top left,
    # so boxes keep the frame's coordinates (a partial last row / column is dropped).
    H, W = (H // cell) * cell, (W // cell) * cell
    if H < cell or W < cell:
        raise ValueError(f"frames must be at least {cell} x {cell} pixels, got {imgs.shape[1:3]}")
    motion = F.avg_pool2d(motion[..., :H, :W], cell)[:, 0]                  # (N, h, w)
    if first_box is None:
        prev = torch.tensor([[0.0, 0.0, float(W), float(H)]])
        r = read_boxes(motion[:1], prev, (H, W), threshold=threshold, search=1.0)
        prev = r.boxes
    else:
        prev = torch.as_tensor(np.asarray(first_box, np.float32)).view(1, 4)
        r = read_boxes(motion[:1], prev, (H, W), threshold=threshold, search=search)
    boxes, scores = [prev[0].clone()], [r.scores[0]]
    for k in range(1, N):
        r = read_boxes(motion[k:k + 1], prev, (H, W), threshold=threshold, search=search)
        prev = r.boxes
        boxes.append(prev[0].clone())
        scores.append(r.scores[0])
    return torch.stack(boxes).numpy().astype(np.float32), torch.stack(scores).numpy().astype(np.float32)


def pseudo_label_sequence(seq, first_box=None):
    """A copy of a fasttrack Sequence whose `gt` holds motion pseudo-labels (the sequence's own
    ground truth, if any, moves to ``meta["true_gt"]`` so label quality can be measured)."""
    from ..data.sequences import Sequence

    frames = list(seq.frames)
    boxes, scores = motion_pseudo_labels(frames, first_box)
    meta = dict(getattr(seq, "meta", None) or {})
    if getattr(seq, "gt", None) is not None:
        meta["true_gt"] = np.asarray(seq.gt, np.float32)
    meta["pseudo_scores"] = scores
    return Sequence(f"{seq.name}-pseudo", frames, boxes, meta=meta, text=getattr(seq, "text", None))
