"""`train_detrack`: the DeTrack training loop behind `fasttrack train detrack`.

One step: sample a batch (fasttrack.trackers.detrack.train.sample_batch: jittered search crops,
noised or static trajectories), the paper's losses with t drawn near infer_t and, by default,
the tracker's own fixed noise sample (detrack_losses, `fixed_noise`), AdamW with linear warm-up
then cosine decay to 10 % of the learning rate over the run (its length is --steps or
--minutes, whichever ends first), gradients clipped at norm 1.

Every `eval_every` steps, and at the end, the tracker runs closed-loop over `val_sequences`
held-out "val" sequences of `val_frames` frames (fasttrack.train.data.validation_sequences;
24 x 60 by default: 6 x 40 swung by +-0.05 between evaluations) and its
AO is logged (the training curve: AO against minutes). Files in `out`:
    last.pt       everything --resume needs (weights, optimizer, step, elapsed time, curve,
                  random states), rewritten at each evaluation and at the end
    detrack.pt    the weights with the best validation AO so far, a DeTrack.save checkpoint
                  (`--weights` of track / eval / demo), its meta holding the recipe and curve
    curve.json    the training curve
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..eval import metrics
from ..trackers.detrack import DeTrack
from ..trackers.detrack.model import BOX_HEADS
from ..trackers.detrack.train import LossWeights, default_t_min, sample_batch, train_step
from .data import TrainingData, validation_sequences

__all__ = ["TrainOptions", "train_detrack", "heldout_ao", "CONFIGS"]

TRAIN_FORMAT = "fasttrack.train.detrack/1"
CONFIGS = {"tiny": DeTrack.tiny, "detrack256": DeTrack.detrack256, "detrack384": DeTrack.detrack384}


@dataclass
class TrainOptions:
    """What a DeTrack training run does (the CLI's options, same names)."""

    config: str = "tiny"
    box_head: str = "bins"
    data: tuple = ("synthetic",)
    out: str = "detrack-train"
    minutes: float | None = None
    steps: int | None = None
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    center_jitter: float = 1.5
    small_jitter: float = 0.5
    small_jitter_prob: float = 0.0
    t_min: int | None = None
    fixed_noise: float = 1.0
    close_distractors: float = 0.0
    denoise_weight: float = 1.0
    seed: int = 0
    eval_every: int = 250
    val_sequences: int = 24
    val_frames: int = 60
    init_vit: str | None = None
    device: str = "cpu"
    resume: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.config not in CONFIGS:
            raise ValueError(f"config must be one of {sorted(CONFIGS)}, got {self.config!r}")
        if self.box_head not in BOX_HEADS:
            raise ValueError(f"--box-head must be one of {BOX_HEADS}, got {self.box_head!r}")
        if self.minutes is None and self.steps is None:
            raise ValueError("give --minutes or --steps (or both: whichever ends first)")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")
        for name in ("batch_size", "eval_every", "val_sequences"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.close_distractors <= 1.0:
            raise ValueError(f"--close-distractors must be in [0, 1], got {self.close_distractors}")
        if self.val_frames < 2:
            raise ValueError(f"--val-frames must be >= 2, got {self.val_frames}")
        if not 0.0 <= self.small_jitter_prob <= 1.0:
            raise ValueError(f"--small-jitter-prob must be in [0, 1], got {self.small_jitter_prob}")
        if not (self.center_jitter >= 0 and self.small_jitter >= 0):
            raise ValueError("--center-jitter and --small-jitter must be >= 0")
        if not 0.0 <= self.fixed_noise <= 1.0:
            raise ValueError(f"--fixed-noise must be in [0, 1], got {self.fixed_noise}")
        if not self.denoise_weight >= 0:
            raise ValueError(f"--denoise-weight must be >= 0, got {self.denoise_weight}")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ValueError("--lr must be > 0, --weight-decay and --warmup-steps >= 0")


def heldout_ao(tracker, sequences) -> dict:
    """Track each sequence closed-loop from its first box; AO (mean IoU over the frames after
    the first) per sequence and its mean. Returns {"ao", "per_sequence": {name: ao}}."""
    per = {}
    was = tracker.training
    tracker.eval()
    for seq in sequences:
        boxes, _ = tracker.run(seq, seq.gt[0], progress=False)
        per[seq.name] = float(metrics(boxes, seq.gt, skip_first=True)["ao"])
    tracker.train(was)
    return {"ao": float(np.mean(list(per.values()))), "per_sequence": per}


def _lr_factor(step: int, progress: float, warmup: int) -> float:
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train_detrack(opts: TrainOptions, log=print) -> dict:
    """Train a DeTrack as `opts` says (module docstring). Returns {"tracker" (the best-val
    weights, eval mode), "curve" [{step, minutes, val_ao, loss, box_iou}], "best_ao", "steps",
    "minutes", "out"}."""
    opts.check()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(opts.device)
    tracker = CONFIGS[opts.config](seed=opts.seed, device=device, box_head=opts.box_head)
    if opts.init_vit:
        from .vit_init import load_vit_weights

        report = load_vit_weights(tracker.net, opts.init_vit)
        log(f"init from {opts.init_vit}: {len(report['loaded'])} tensors loaded")
    opt = torch.optim.AdamW(tracker.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    data = TrainingData(opts.data, seed=opts.seed, close_distractors=opts.close_distractors)
    val = validation_sequences(opts.val_sequences, opts.val_frames)
    rng = np.random.default_rng([505, opts.seed])
    gen = torch.Generator().manual_seed(opts.seed)
    t_min = default_t_min(tracker.config) if opts.t_min is None else opts.t_min
    weights = LossWeights(denoise=opts.denoise_weight)
    step, elapsed, curve, best = 0, 0.0, [], -1.0
    last = out / "last.pt"
    if opts.resume:
        if not last.is_file():
            raise ValueError(f"--resume: no {last} to resume from")
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck.get("format") != TRAIN_FORMAT or ck.get("config") != tracker.config.to_dict():
            raise ValueError(f"--resume: {last} was written for another model or format")
        tracker.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        data.load_state_dict(ck["data"])
        rng.bit_generator.state = ck["rng"]
        gen.set_state(ck["torch_rng"])
        step, elapsed, curve, best = ck["step"], ck["elapsed_s"], ck["curve"], ck["best_ao"]
        log(f"resumed {last} at step {step} ({elapsed / 60:.1f} min)")
    recipe = {k: v for k, v in asdict(opts).items() if k not in ("progress", "resume", "out")}
    log(f"train {opts.config} ({opts.box_head} box head): {sum(p.numel() for p in tracker.parameters()) / 1e6:.2f} M "
        f"parameters, data: {data.describe()}, t in [{t_min}, {tracker.config.infer_t}], "
        f"held-out: {len(val)} val sequences")

    def limit_reached():
        return ((opts.steps is not None and step >= opts.steps)
                or (opts.minutes is not None and elapsed >= 60 * opts.minutes))

    def progress():
        parts = [step / opts.steps if opts.steps else 0.0,
                 elapsed / (60 * opts.minutes) if opts.minutes else 0.0]
        return max(parts)

    def evaluate_and_save(loss, box_iou):
        nonlocal best
        res = heldout_ao(tracker, val)
        curve.append({"step": step, "minutes": round(elapsed / 60, 3), "val_ao": round(res["ao"], 4),
                      "loss": round(loss, 4), "box_iou": round(box_iou, 4)})
        if res["ao"] > best:
            best = res["ao"]
            tracker.save(out / "detrack.pt", meta={"recipe": recipe, "step": step,
                                                    "minutes": elapsed / 60, "val": res,
                                                    "curve": curve})
        torch.save({"format": TRAIN_FORMAT, "config": tracker.config.to_dict(),
                    "state_dict": tracker.state_dict(), "optimizer": opt.state_dict(),
                    "data": data.state_dict(), "rng": rng.bit_generator.state,
                    "torch_rng": gen.get_state(), "step": step, "elapsed_s": elapsed,
                    "curve": curve, "best_ao": best, "recipe": recipe}, last)
        (out / "curve.json").write_text(json.dumps(curve, indent=1))
        return res["ao"]

    from tqdm.auto import tqdm

    total = opts.steps if opts.minutes is None else round(60 * opts.minutes)
    unit = "step" if opts.minutes is None else "s"
    bar = tqdm(total=total, initial=step if unit == "step" else round(elapsed), unit=unit,
               desc=f"train {opts.config}", disable=not opts.progress, dynamic_ncols=True)
    ema_loss = ema_iou = None
    while not limit_reached():
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = opts.lr * _lr_factor(step, progress(), opts.warmup_steps)
        batch = sample_batch(data.sequences, opts.batch_size, tracker.config, device=device,
                             generator=rng, center_jitter=opts.center_jitter,
                             small_jitter=opts.small_jitter,
                             small_jitter_prob=opts.small_jitter_prob)
        losses = train_step(tracker, opt, batch, generator=gen, t_min=t_min, weights=weights,
                            fixed_noise=opts.fixed_noise)
        data.step()
        step += 1
        dt = time.perf_counter() - t0
        elapsed += dt
        ema_loss = losses["total"] if ema_loss is None else 0.95 * ema_loss + 0.05 * losses["total"]
        ema_iou = losses["box_iou"] if ema_iou is None else 0.95 * ema_iou + 0.05 * losses["box_iou"]
        bar.update(1 if unit == "step" else round(elapsed) - bar.n)
        bar.set_postfix(loss=f"{ema_loss:.3f}", iou=f"{ema_iou:.3f}",
                        val_ao=f"{curve[-1]['val_ao']:.3f}" if curve else "-", refresh=False)
        if step % opts.eval_every == 0 and not limit_reached():
            ao = evaluate_and_save(ema_loss, ema_iou)
            bar.write(f"step {step} ({elapsed / 60:.1f} min): loss {ema_loss:.3f}, train box IoU "
                      f"{ema_iou:.3f}, val AO {ao:.3f}")
    bar.close()
    if not curve or curve[-1]["step"] != step:
        ao = evaluate_and_save(ema_loss or float("nan"), ema_iou or float("nan"))
        log(f"step {step} ({elapsed / 60:.1f} min): val AO {ao:.3f}")
    log(f"best val AO {best:.3f}; weights {out / 'detrack.pt'}, resume state {last}")
    best_tracker = DeTrack.from_checkpoint(out / "detrack.pt", map_location=device).eval()
    return {"tracker": best_tracker, "curve": curve, "best_ao": best, "steps": step,
            "minutes": elapsed / 60, "out": out}
