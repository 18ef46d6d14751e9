"""DMTrack training: batches with descriptions, the paper's losses (eq. 6), one optimizer step.

    L = L_cls + 2 L_giou + 5 L_1 + 5 L_struct          (the DMTrack paper, eq. 6, its weights)
      + 1 L_score                                     (fasttrack's: the IoU score, tracker.score)

- L_cls: CenterNet's weighted focal loss (the paper's "weighted focal loss", OSTrack's) of the
  centre map sigmoid(logits) against a Gaussian at the true centre scaled to peak 1
  (sigma = max(0.5, sqrt(w h) G / 6) cells, DeTrack's center_targets);
- L_1, L_giou: the box read at the true centre's cell (OSTrack reads its training box there);
- L_struct: the structure loss of the diffusion module's training mask (double-sample,
  mask_diffusion.py) against the ground-truth mask: the box's cell coverage, and after
  `ce_start` of the run the ground-truth candidate elimination: of the cells inside the box,
  those ranked lowest by the last ViT block's template-to-search attention are dropped
  (keep ratio `ce_keep`, OSTrack's 0.7), so the mask target loses the box's background;
- L_score: MSE of the IoU score against the IoU of the box at the predicted peak.

Batches: DeTrack's sampler (jittered search crops, a template from an earlier frame of the same
sequence; one template, no trajectory) plus each item's description: its sequence's `text`,
dropped (None) with probability `text_drop` so the vision-only path stays trained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from ..detrack.center_head import center_targets
from ..detrack.train import box_iou_xyxy, generalized_iou_xyxy
from ..detrack.train import sample_batch as detrack_sample_batch
from .mask_diffusion import box_mask, structure_loss
from .model import DMTrackNet

__all__ = ["LossWeights", "focal_loss", "eliminate_candidates", "dmtrack_losses", "sample_batch",
           "train_step"]


@dataclass(frozen=True)
class LossWeights:
    cls: float = 1.0
    giou: float = 2.0
    l1: float = 5.0
    struct: float = 5.0
    score: float = 1.0


def focal_loss(logits: torch.Tensor, heat: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """CenterNet's focal loss (Law & Deng 2018; Zhou et al. 2019), mean over the batch:
    -(1/B) sum [(1-p)^a log p at heat == 1; (1-heat)^b p^a log(1-p) elsewhere], p = sigmoid.
    logits, heat (B, N); heat in [0, 1] with one 1 per row."""
    logp = F.logsigmoid(logits.float())
    log1p = F.logsigmoid(-logits.float())
    p = logp.exp()
    pos = heat >= 1.0
    pos_loss = ((1 - p) ** alpha * logp)[pos].sum()
    neg_loss = ((1 - heat) ** beta * p ** alpha * log1p)[~pos].sum()
    return -(pos_loss + neg_loss) / max(int(pos.sum()), 1)


def eliminate_candidates(target: torch.Tensor, attention: torch.Tensor, keep: float) -> torch.Tensor:
    """Ground-truth candidate elimination: target (B, N) box coverage, attention (B, N) the
    template-to-search ranking -> target with all but the top ceil(keep * n_inside) inside
    cells of each row (by attention) set to 0."""
    inside = target > 0
    n_keep = torch.ceil(inside.sum(1).float() * keep).long()                 # (B,)
    score = torch.where(inside, attention.float(), torch.full_like(attention.float(), -math.inf))
    rank = score.argsort(1, descending=True).argsort(1)
    return torch.where(inside & (rank < n_keep[:, None]), target, torch.zeros_like(target))


def dmtrack_losses(net: DMTrackNet, batch: dict, generator: torch.Generator | None = None,
                   weights: LossWeights = LossWeights(), eliminate: bool = False,
                   ce_keep: float = 0.7, double_sample: bool = True) -> dict:
    """Losses of one batch: template (B, 3, Sz, Sz), search (B, 3, S, S) normalized crops, gt
    (B, 4) xyxy in the search crop, texts (B list of str/None). Returns "total" (scalar with
    grad) and float parts cls, l1, giou, struct, score, box_iou (IoU of the tracker's box)."""
    cfg, G = net.cfg, net.cfg.grid
    z = net.embed_template(batch["template"])
    x = net.embed_search(batch["search"])
    text, has = net.encode_text(batch["texts"])
    hz, hx, last_in = net.features(z, x)
    fs = net.cross(hx, text, has.to(hx.dtype))
    gt = batch["gt"]
    w = weights
    parts = {}
    mask = None
    total = 0.0
    if net.mask is not None:
        target = box_mask(gt, G)
        if eliminate:
            with torch.no_grad():
                att = net.template_attention(last_in, z.shape[1])
            target = eliminate_candidates(target, att, ce_keep)
        mask = net.mask.train_sample(fs, target, cfg.mask_steps, generator, double_sample)
        struct = structure_loss(mask, target, G)
        total = total + w.struct * struct
        parts["struct"] = struct
    out = net.head_from(fs, hz, mask)
    cell, soft = center_targets(gt, G)
    heat = soft / soft.max(1, keepdim=True).values
    cls = focal_loss(out["logits"], heat)
    at_gt = net.head.box_at(out, cell)
    l1 = (at_gt - gt).abs().mean()
    giou = (1 - generalized_iou_xyxy(at_gt, gt)).mean()
    pred_iou = box_iou_xyxy(out["xyxy"].detach(), gt)
    score = F.mse_loss(out["iou_score"], pred_iou)
    total = total + w.cls * cls + w.giou * giou + w.l1 * l1 + w.score * score
    parts.update(cls=cls, l1=l1, giou=giou, score=score, box_iou=pred_iou.mean())
    return {"total": total, **{k: float(v.detach()) for k, v in parts.items()}}


def sample_batch(sequences, batch_size: int, cfg, device="cpu", generator: np.random.Generator | None = None,
                 text_drop: float = 0.1, center_jitter: float = 1.5, augment: float = 0.0) -> dict:
    """A training batch (see dmtrack_losses) from fasttrack Sequences (their `text` is the
    description) or (frames, boxes) pairs (no description). DeTrack's sampler does the crops
    (one template, no trajectory, `augment` its photometric augmentation probability); each
    description is dropped with probability text_drop."""
    if not 0.0 <= text_drop <= 1.0:
        raise ValueError(f"text_drop must be in [0, 1], got {text_drop}")
    rng = generator or np.random.default_rng()
    view = SimpleNamespace(n_templates=1, traj_len=1, template_factor=cfg.template_factor,
                           template_size=cfg.template_size, search_factor=cfg.search_factor,
                           search_size=cfg.search_size)
    b = detrack_sample_batch(sequences, batch_size, view, device=device, generator=rng,
                             center_jitter=center_jitter, traj_static=1.0, augment=augment)
    texts = [getattr(sequences[i], "text", None) for i in b["sequence"]]
    texts = [None if rng.random() < text_drop else t for t in texts]
    return {"template": b["templates"][:, 0], "search": b["search"], "gt": b["gt"], "texts": texts}


def train_step(model, optimizer: torch.optim.Optimizer, batch: dict,
               generator: torch.Generator | None = None, weights: LossWeights = LossWeights(),
               eliminate: bool = False, ce_keep: float = 0.7, double_sample: bool = True,
               clip_grad: float | None = 1.0) -> dict:
    """One optimizer step; model is a DMTrack or its DMTrackNet (patched works: the fused
    cross-attention is differentiable). Returns the float losses ("total" included)."""
    net = getattr(model, "net", model)
    if not isinstance(net, DMTrackNet):
        raise TypeError(f"model must be a DMTrack or DMTrackNet, got {type(model).__name__}")
    net.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.enable_grad():
        losses = dmtrack_losses(net, batch, generator, weights, eliminate, ce_keep, double_sample)
        losses["total"].backward()
    if clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad)
    optimizer.step()
    net.eval()
    return {**losses, "total": float(losses["total"].detach())}
