"""DeTrack training: batches from sequences with boxes, the paper's losses, one optimizer step.

Losses (DESIGN.md 1.4), for a batch of B (templates, search crop, ground-truth box) triples:
- denoising: the ground-truth box embedding b0 is noised to a random step t,
  b_t = sqrt(abar_t) b0 + sqrt(1 - abar_t) eps; block l (of L) must output the same noise sample
  at step t_l = floor(t (L - l) / L), i.e. each block removes its share of the noise ("noise
  layer by layer", the paper's better variant) and the last block lands on b0. Loss: mean over
  blocks of the MSE to those targets.
- box: the refined, mapped box (soft-argmax xyxy in the crop) against the ground truth with
  L1 + generalized IoU (the usual tracker pair), plus cross-entropy of the bin logits against the
  ground-truth bins (keeps the learned bin embeddings apart, so the denoising targets cannot
  collapse) and an MSE that teaches the IoU score the IoU of the predicted box.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .crop import crop_and_resize, frame_to_crop, frame_to_tensor
from .model import DeTrackNet

__all__ = ["LossWeights", "box_iou_xyxy", "generalized_iou_xyxy", "detrack_losses",
           "sample_batch", "train_step"]


@dataclass(frozen=True)
class LossWeights:
    denoise: float = 1.0
    l1: float = 5.0
    giou: float = 2.0
    ce: float = 1.0
    iou: float = 1.0


def _area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)


def box_iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise IoU of (..., 4) corner boxes."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    return inter / (_area(a) + _area(b) - inter).clamp_min(1e-12)


def generalized_iou_xyxy(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise generalized IoU (Rezatofighi et al. 2019) of (..., 4) corner boxes."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    union = (_area(a) + _area(b) - inter).clamp_min(1e-12)
    hull_wh = torch.maximum(a[..., 2:], b[..., 2:]) - torch.minimum(a[..., :2], b[..., :2])
    hull = hull_wh.clamp_min(0).prod(-1)
    return inter / union - (hull - union) / hull.clamp_min(1e-12)


def detrack_losses(net: DeTrackNet, batch: dict, generator: torch.Generator | None = None,
                   weights: LossWeights = LossWeights()) -> dict:
    """Losses of one batch. batch: templates (B, K, 3, Sz, Sz), search (B, 3, S, S) normalized
    crops, gt (B, 4) and traj (B, T, 4) xyxy in the search crop. Returns a dict with "total"
    (a scalar tensor with grad) and float parts "denoise", "l1", "giou", "ce", "iou"."""
    templates, search, gt, traj = batch["templates"], batch["search"], batch["gt"], batch["traj"]
    B, K = templates.shape[:2]
    z = net.embed_template(templates.flatten(0, 1))
    z = z.view(B, K, *z.shape[1:])
    x = net.embed_search(search)
    T = net.cfg.timesteps
    dev = search.device
    t = torch.randint(1, T + 1, (B,), generator=generator, device="cpu").to(dev)
    eps = torch.randn((B, 4, net.cfg.dim), generator=generator, device="cpu").to(dev, x.dtype)
    b0 = net.box_embed(gt)

    def noised(step: torch.Tensor) -> torch.Tensor:
        a = net.abar(step).to(x.dtype)[:, None, None]
        return a.sqrt() * b0 + (1 - a).sqrt() * eps

    _, b_out, layers = net.denoise(z, x, noised(t))
    L = len(layers)
    denoise = sum(F.mse_loss(bl, noised(torch.div(t * (L - l), L, rounding_mode="floor")))
                  for l, bl in enumerate(layers, 1)) / L
    out = net.head(b_out, traj)
    pred = out["xyxy"]
    l1 = (pred - gt).abs().mean()
    giou = (1 - generalized_iou_xyxy(pred, gt)).mean()
    ce = F.cross_entropy(out["logits"].flatten(0, 1).float(), net.box_embed.bins(gt).flatten())
    iou = F.mse_loss(out["iou_score"], box_iou_xyxy(pred.detach(), gt))
    w = weights
    total = w.denoise * denoise + w.l1 * l1 + w.giou * giou + w.ce * ce + w.iou * iou
    parts = {"denoise": denoise, "l1": l1, "giou": giou, "ce": ce, "iou": iou}
    return {"total": total, **{k: float(v.detach()) for k, v in parts.items()}}


def _frames_and_boxes(seq):
    if hasattr(seq, "frames") and hasattr(seq, "gt"):
        return seq.frames, np.asarray(seq.gt, dtype=np.float32)
    frames, boxes = seq
    return frames, np.asarray(boxes, dtype=np.float32)


def sample_batch(sequences, batch_size: int, cfg, device="cpu", generator: np.random.Generator | None = None,
                 center_jitter: float = 3.0, scale_jitter: float = 0.25) -> dict:
    """Sample a training batch (see detrack_losses for its keys) from `sequences`: objects with
    .frames / .gt (fasttrack.data.Sequence) or (frames, boxes) pairs, boxes (N, 4) [x, y, w, h].
    Per item: a search frame s, templates from frame 0 and K-1 random frames <= s (cropped 2x
    at their boxes), the search region cropped 4x around the box of frame s jittered as OSTrack
    (size * exp(N(0, scale_jitter)), centre + U(-1/2, 1/2) * center_jitter * sqrt(w h)), and
    the trajectory: the boxes of frames s-T .. s-1 (clamped at 0)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not sequences:
        raise ValueError("sequences must not be empty")
    rng = generator or np.random.default_rng()
    temps, searches, gts, trajs = [], [], [], []
    for _ in range(batch_size):
        frames, boxes = _frames_and_boxes(sequences[int(rng.integers(len(sequences)))])
        n = len(frames)
        s = int(rng.integers(1, n)) if n > 1 else 0
        t_idx = [0] + sorted(int(i) for i in rng.integers(0, s + 1, cfg.n_templates - 1))
        z = []
        for i in t_idx:
            frame = frame_to_tensor(torch.as_tensor(np.asarray(frames[i])).to(device))
            crop, *_ = crop_and_resize(frame, torch.as_tensor(boxes[i:i + 1], device=device),
                                       cfg.template_factor, cfg.template_size)
            z.append(crop[0])
        box = boxes[s].astype(np.float64)
        size = box[2:] * np.exp(rng.normal(size=2) * scale_jitter)
        center = box[:2] + box[2:] / 2 + np.sqrt(size.prod()) * center_jitter * (rng.random(2) - 0.5)
        jittered = torch.tensor([[*(center - size / 2), *size]], dtype=torch.float32, device=device)
        frame = frame_to_tensor(torch.as_tensor(np.asarray(frames[s])).to(device))
        x, x0, y0, side = crop_and_resize(frame, jittered, cfg.search_factor, cfg.search_size)
        past = boxes[[max(s - cfg.traj_len + j, 0) for j in range(cfg.traj_len)]]
        temps.append(torch.stack(z))
        searches.append(x[0])
        gts.append(frame_to_crop(torch.as_tensor(boxes[s:s + 1], device=device), x0, y0, side)[0])
        trajs.append(frame_to_crop(torch.as_tensor(past[None], device=device), x0, y0, side)[0])
    return {"templates": torch.stack(temps), "search": torch.stack(searches),
            "gt": torch.stack(gts), "traj": torch.stack(trajs)}


def train_step(model, optimizer: torch.optim.Optimizer, batch: dict,
               generator: torch.Generator | None = None, weights: LossWeights = LossWeights()) -> dict:
    """One optimizer step on `batch`; model is a DeTrack tracker or its DeTrackNet. Works on
    patched trackers (fused box branches fall back to the reference while grad is on).
    Returns the float losses ("total" included)."""
    net = getattr(model, "net", model)
    if not isinstance(net, DeTrackNet):
        raise TypeError(f"model must be a DeTrack or DeTrackNet, got {type(model).__name__}")
    net.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.enable_grad():
        losses = detrack_losses(net, batch, generator, weights)
        losses["total"].backward()
    optimizer.step()
    net.eval()
    return {**losses, "total": float(losses["total"].detach())}
