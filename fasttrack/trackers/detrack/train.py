"""DeTrack training: batches from sequences with boxes, the paper's losses, one optimizer step.

Losses (DESIGN.md 1.4), for a batch of B (templates, search crop, ground-truth box) triples:
- denoising: the ground-truth box embedding b0 is noised to a random step t drawn from
  [t_min, infer_t] (default t_min = infer_t - 5 % of the schedule). Not uniform over [1, T]:
  at small t the noised ground truth shows through and the network learns to copy it, which
  is worthless at t = infer_t = T, the only step a single-pass tracker runs (DESIGN.md 1.7:
  held-out IoU 0.96 at t <= 500 and 0.01 at t = T when trained uniform). Multi-pass sampling
  (denoise_steps > 1) visits every step and wants t_min near 0.
  b_t = sqrt(abar_t) b0 + sqrt(1 - abar_t) eps; block l (of L) must output the same noise sample
  at step t_l = floor(t (L - l) / L), i.e. each block removes its share of the noise ("noise
  layer by layer", the paper's better variant) and the last block lands on b0. Loss: mean over
  blocks of the MSE to those targets.
  Which noise: the tracker starts every frame from one fixed sample (`box_noise`, stored in
  the checkpoint; DDIM with eta = 0 keeps it through a multi-pass run), so a fraction
  `fixed_noise` of the training samples (default 1 in fasttrack.train) is noised with that
  same sample instead of fresh N(0, I) noise. Fresh noise is the plain DDPM objective; at
  t near T it makes the box tokens' input a random vector the tracker never feeds, which the
  network must first learn to ignore. Measured on the tiny model (600 steps, one CPU thread,
  held-out val AO): 0.18 with fresh noise, 0.51 with the fixed sample.
- box: the refined, mapped box (soft-argmax xyxy in the crop) against the ground truth with
  L1 + generalized IoU (the usual tracker pair), plus cross-entropy of the bin logits against the
  ground-truth bins (keeps the learned bin embeddings apart, so the denoising targets cannot
  collapse) and an MSE that teaches the IoU score the IoU of the predicted box.
- centre head (box_head "center", center_head.py): soft cross-entropy of the centre map against
  a Gaussian at the true centre, and L1 + GIoU (same weights as above) of the box read at the
  true centre's cell; the bin decoder keeps all its losses (it still trains the box tokens
  the centre map is queried with), and the IoU score learns the IoU of the centre head's box.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .center_head import center_targets
from .crop import crop_and_resize, frame_to_crop, frame_to_tensor
from .model import DeTrackNet

__all__ = ["LossWeights", "box_iou_xyxy", "default_t_min", "generalized_iou_xyxy",
           "detrack_losses", "sample_batch", "train_step"]


@dataclass(frozen=True)
class LossWeights:
    denoise: float = 1.0
    l1: float = 5.0
    giou: float = 2.0
    ce: float = 1.0
    iou: float = 1.0
    center: float = 1.0


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


def default_t_min(cfg) -> int:
    """Lowest training step for a single-pass model: infer_t minus 5 % of the schedule."""
    return max(1, cfg.infer_t - cfg.timesteps // 20)


def detrack_losses(net: DeTrackNet, batch: dict, generator: torch.Generator | None = None,
                   weights: LossWeights = LossWeights(), t_min: int | None = None,
                   fixed_noise: float = 0.0) -> dict:
    """Losses of one batch. batch: templates (B, K, 3, Sz, Sz), search (B, 3, S, S) normalized
    crops, gt (B, 4) and traj (B, T, 4) xyxy in the search crop. t is drawn uniformly from
    [t_min, infer_t] (default `default_t_min`). Returns a dict with "total" (a scalar tensor
    with grad) and float parts "denoise", "l1", "giou", "ce", "iou", "box_iou" (mean IoU of
    the boxes the tracker would output), plus "center", "center_l1", "center_giou" with
    box_head "center". fixed_noise: the fraction of samples noised with net.box_noise, the
    tracker's inference sample, instead of fresh noise (module docstring)."""
    templates, search, gt, traj = batch["templates"], batch["search"], batch["gt"], batch["traj"]
    B, K = templates.shape[:2]
    z = net.embed_template(templates.flatten(0, 1))
    z = z.view(B, K, *z.shape[1:])
    x = net.embed_search(search)
    hi = max(net.cfg.infer_t, 1)
    lo = default_t_min(net.cfg) if t_min is None else int(t_min)
    if not 1 <= lo <= hi:
        raise ValueError(f"t_min must be in [1, infer_t = {hi}], got {lo}")
    dev = search.device
    t = torch.randint(lo, hi + 1, (B,), generator=generator, device="cpu").to(dev)
    eps = torch.randn((B, 4, net.cfg.dim), generator=generator, device="cpu").to(dev, x.dtype)
    if not 0.0 <= fixed_noise <= 1.0:
        raise ValueError(f"fixed_noise must be in [0, 1], got {fixed_noise}")
    if fixed_noise > 0:
        use = (torch.rand((B,), generator=generator) < fixed_noise).to(dev)[:, None, None]
        eps = torch.where(use, net.box_noise.to(x.dtype).expand_as(eps), eps)
    b0 = net.box_embed(gt)

    def noised(step: torch.Tensor) -> torch.Tensor:
        a = net.abar(step).to(x.dtype)[:, None, None]
        return a.sqrt() * b0 + (1 - a).sqrt() * eps

    x_out, b_out, layers = net.denoise(z, x, noised(t))
    L = len(layers)
    denoise = sum(F.mse_loss(bl, noised(torch.div(t * (L - l), L, rounding_mode="floor")))
                  for l, bl in enumerate(layers, 1)) / L
    out = net.head(b_out, traj, x_out)
    pred = out.get("bins_xyxy", out["xyxy"])
    l1 = (pred - gt).abs().mean()
    giou = (1 - generalized_iou_xyxy(pred, gt)).mean()
    ce = F.cross_entropy(out["logits"].flatten(0, 1).float(), net.box_embed.bins(gt).flatten())
    # the IoU score learns the IoU of the box the tracker outputs (the centre head's, if any)
    pred_iou = box_iou_xyxy(out["xyxy"].detach(), gt)
    iou = F.mse_loss(out["iou_score"], pred_iou)
    w = weights
    total = w.denoise * denoise + w.l1 * l1 + w.giou * giou + w.ce * ce + w.iou * iou
    parts = {"denoise": denoise, "l1": l1, "giou": giou, "ce": ce, "iou": iou,
             "box_iou": pred_iou.mean()}
    if net.center is not None:
        # centre map: soft cross-entropy against a Gaussian at the true centre; the box is
        # taught at the true centre's cell (where the map should peak), not at the predicted
        # peak, whose features early in training belong to any object
        c = out["center"]
        cell, soft = center_targets(gt, net.center.grid)
        cmap = -(soft * c["logits"].log_softmax(-1)).sum(-1).mean()
        at_gt = net.center.box_at(c, cell)
        cl1 = (at_gt - gt).abs().mean()
        cgiou = (1 - generalized_iou_xyxy(at_gt, gt)).mean()
        total = total + w.center * cmap + w.l1 * cl1 + w.giou * cgiou
        parts.update(center=cmap, center_l1=cl1, center_giou=cgiou)
    return {"total": total, **{k: float(v.detach()) for k, v in parts.items()}}


def _frames_and_boxes(seq):
    """(frame getter i -> (H, W, 3) uint8, boxes (N, 4) float32) of a Sequence or a pair."""
    if hasattr(seq, "frames") and hasattr(seq, "gt"):
        boxes = np.asarray(seq.gt, dtype=np.float32)
        if getattr(seq, "absent", None) is not None:
            boxes = boxes.copy()
            boxes[seq.absent] = np.nan
        return (seq.__getitem__ if hasattr(seq, "__getitem__") else seq.frames.__getitem__), boxes
    frames, boxes = seq
    return (lambda i: np.asarray(frames[i])), np.asarray(boxes, dtype=np.float32)


def _valid(boxes: np.ndarray) -> np.ndarray:
    """(N,) bool: finite boxes with positive width and height (absent targets are not)."""
    return np.isfinite(boxes).all(1) & (np.nan_to_num(boxes[:, 2]) > 0) & (np.nan_to_num(boxes[:, 3]) > 0)


def _crop(frame: np.ndarray, box, factor: float, size: int, device):
    img = frame_to_tensor(torch.as_tensor(np.asarray(frame)).to(device))
    return crop_and_resize(img, torch.as_tensor(np.asarray(box, np.float32)[None], device=device),
                           factor, size)


_GREY = (0.299, 0.587, 0.114)


def photometric(templates: torch.Tensor, search: torch.Tensor, rng: np.random.Generator,
                grey: float = 0.2, blur: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The augmentations real trackers train with, on one item's crops (values 0 .. 255):
    templates (K, 3, h, w) and search (3, H, W) share a brightness gain U(0.7, 1.3), a contrast
    gain U(0.7, 1.3) about each crop's mean and a saturation U(0.6, 1.4) (0 with probability
    `grey`: all crops greyscale, ITU-R 601 luminance); the search alone gets a further
    brightness U(0.9, 1.1) (the light changes between frames) and with probability `blur` a
    Gaussian blur of sigma U(0.5, 1.5) px (motion and focus)."""
    b, c, sat = rng.uniform(0.7, 1.3), rng.uniform(0.7, 1.3), rng.uniform(0.6, 1.4)
    if rng.random() < grey:
        sat = 0.0
    extra = rng.uniform(0.9, 1.1)
    sigma = rng.uniform(0.5, 1.5) if rng.random() < blur else 0.0
    w = torch.tensor(_GREY, dtype=search.dtype, device=search.device).view(3, 1, 1)

    def jitter(x: torch.Tensor, gain: float) -> torch.Tensor:
        lum = (x * w).sum(-3, keepdim=True)
        x = lum + sat * (x - lum)
        mean = x.mean(dim=(-3, -2, -1), keepdim=True)
        return ((x - mean) * c + mean) * gain

    search = jitter(search, b * extra)
    if sigma > 0:
        r = int(np.ceil(2 * sigma))
        k = torch.exp(-torch.arange(-r, r + 1, dtype=search.dtype, device=search.device) ** 2
                      / (2 * sigma ** 2))
        k = k / k.sum()
        x = F.pad(search[None], (r, r, r, r), mode="replicate")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        search = F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]
    return jitter(templates, b).clamp(0, 255), search.clamp(0, 255)


def sample_batch(sequences, batch_size: int, cfg, device="cpu", generator: np.random.Generator | None = None,
                 center_jitter: float = 1.5, scale_jitter: float = 0.25, traj_noise: float = 0.3,
                 traj_static: float = 0.3, first_templates: float = 0.5,
                 small_jitter: float = 0.5, small_jitter_prob: float = 0.0,
                 augment: float = 0.0) -> dict:
    """Sample a training batch (see detrack_losses for its keys) from `sequences`:
    fasttrack.data.Sequence objects (frames read on demand; absent or empty boxes are never
    sampled) or (frames, boxes) pairs, boxes (N, 4) [x, y, w, h].

    Each item imitates one tracker step on frame s, whose previous valid frame is p:
    - the previous prediction is the box of frame p jittered as OSTrack (size *
      exp(N(0, scale_jitter)), centre + U(-1/2, 1/2) * j * sqrt(w h)); the search region is
      cropped 4x around it, so the target is off-centre by its true motion p -> s plus the
      prediction's error. j is center_jitter, or with probability `small_jitter_prob`
      small_jitter: a tracker's own error is mostly small, and only a crop whose centre usually
      lies near the target teaches the network to prefer the look-alike nearest the previous
      box (with uniform jitter alone a same-texture copy closer to the centre is as likely the
      answer; all small jitter and the network copies the crop centre and lags fast motion);
    - the trajectory (T boxes) is what the tracker would hold, not the clean ground truth
      (DESIGN.md 1.7: a refiner fed clean trajectories follows them and ignores the image):
      its last box is that previous prediction (the tracker's traj[-1] is its crop centre);
      the earlier ones are the boxes of the frames before p, each with its own error (centre
      offset N(0, traj_noise) sqrt(w h), scale exp(N(0, traj_noise))), so neither the size nor
      the motion of the answer can be read off the trajectory reliably; with probability
      `traj_static` the whole trajectory is the previous prediction repeated (a freshly
      initialized tracker holds its first box T times);
    - the templates (cropped 2x at their boxes) come from frames before s, never s itself:
      with probability `first_templates` all K from the first valid frame (what the tracker's
      memory holds until its score gate first opens), else the first plus K-1 random ones.
    - with probability `augment` the item's crops get `photometric` (colour, greyscale, blur);
      at 0 nothing is drawn for it, so the streams of earlier runs stay.
    The batch's "sequence" is the list of the B indices into `sequences` the items came from
    (DMTrack reads their descriptions)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not sequences:
        raise ValueError("sequences must not be empty")
    if not 0.0 <= small_jitter_prob <= 1.0:
        raise ValueError(f"small_jitter_prob must be in [0, 1], got {small_jitter_prob}")
    if not 0.0 <= augment <= 1.0:
        raise ValueError(f"augment must be in [0, 1], got {augment}")
    if not (center_jitter >= 0 and small_jitter >= 0):
        raise ValueError(f"center_jitter and small_jitter must be >= 0, got {center_jitter}, {small_jitter}")
    rng = generator or np.random.default_rng()
    T = cfg.traj_len
    temps, searches, gts, trajs, picked = [], [], [], [], []
    tries = 0
    while len(searches) < batch_size:
        tries += 1
        if tries > 100 * batch_size:
            raise ValueError("sequences hold no two valid boxes to sample a step from")
        seq_index = int(rng.integers(len(sequences)))
        get, boxes = _frames_and_boxes(sequences[seq_index])
        ok = np.flatnonzero(_valid(boxes))
        if len(ok) < 2:
            continue
        k = int(rng.integers(1, len(ok)))
        s, p = int(ok[k]), int(ok[k - 1])
        before = ok[:k]
        if rng.random() < first_templates:
            t_idx = [int(before[0])] * cfg.n_templates
        else:
            t_idx = [int(before[0])] + sorted(int(i) for i in rng.choice(before, cfg.n_templates - 1))
        z = [_crop(get(i), boxes[i], cfg.template_factor, cfg.template_size, device)[0][0]
             for i in t_idx]
        prev = boxes[p].astype(np.float64)
        size = prev[2:] * np.exp(rng.normal(size=2) * scale_jitter)
        # (no draw at small_jitter_prob = 0: the stream, and runs, of earlier versions stay)
        jitter = (small_jitter if small_jitter_prob > 0 and rng.random() < small_jitter_prob
                  else center_jitter)
        center = prev[:2] + prev[2:] / 2 + np.sqrt(size.prod()) * jitter * (rng.random(2) - 0.5)
        pred = np.array([*(center - size / 2), *size])
        x, x0, y0, side = _crop(get(s), pred, cfg.search_factor, cfg.search_size, device)
        if rng.random() < traj_static or T == 1:
            past = np.repeat(pred[None], T, 0)
        else:
            idx = [max(p - T + 1 + j, 0) for j in range(T - 1)]
            past = np.array([boxes[i] if _valid(boxes[i:i + 1])[0] else prev for i in idx],
                            dtype=np.float64)
            # each past box off by its own error, of the size of the previous prediction's:
            # velocities read off the trajectory are then as unreliable as a tracker's own
            # (with exact past boxes the refiner learns to extrapolate them, and in closed loop
            # it extrapolates its own errors: the box runs away from the target)
            unit = np.sqrt(prev[2] * prev[3])
            c = past[:, :2] + past[:, 2:] / 2 + rng.normal(size=(T - 1, 2)) * traj_noise * unit
            wh = past[:, 2:] * np.exp(rng.normal(size=(T - 1, 2)) * traj_noise)
            past = np.concatenate([np.concatenate([c - wh / 2, wh], 1), pred[None]], 0)
        z, x = torch.stack(z), x[0]
        if augment > 0 and rng.random() < augment:
            z, x = photometric(z, x, rng)
        temps.append(z)
        picked.append(seq_index)
        searches.append(x)
        gts.append(frame_to_crop(torch.as_tensor(boxes[s:s + 1], device=device), x0, y0, side)[0])
        trajs.append(frame_to_crop(torch.as_tensor(past[None], dtype=torch.float32, device=device),
                                   x0, y0, side)[0])
    return {"templates": torch.stack(temps), "search": torch.stack(searches),
            "gt": torch.stack(gts), "traj": torch.stack(trajs), "sequence": picked}


def train_step(model, optimizer: torch.optim.Optimizer, batch: dict,
               generator: torch.Generator | None = None, weights: LossWeights = LossWeights(),
               t_min: int | None = None, clip_grad: float | None = 1.0,
               fixed_noise: float = 0.0) -> dict:
    """One optimizer step on `batch`; model is a DeTrack tracker or its DeTrackNet. Works on
    patched trackers (fused box branches fall back to the reference while grad is on).
    Gradients are clipped to a global norm of `clip_grad` (None: not clipped); `fixed_noise`
    as in detrack_losses (default 0 here, the plain DDPM objective).
    Returns the float losses ("total" included)."""
    net = getattr(model, "net", model)
    if not isinstance(net, DeTrackNet):
        raise TypeError(f"model must be a DeTrack or DeTrackNet, got {type(model).__name__}")
    net.train()
    optimizer.zero_grad(set_to_none=True)
    with torch.enable_grad():
        losses = detrack_losses(net, batch, generator, weights, t_min, fixed_noise)
        losses["total"].backward()
    if clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip_grad)
    optimizer.step()
    net.eval()
    return {**losses, "total": float(losses["total"].detach())}
