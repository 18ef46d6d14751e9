"""`train_dmtrack`: DMTrack training behind `fasttrack train dmtrack`.

One step: a batch of (template, search crop, box, description) items
(fasttrack.trackers.dmtrack.train.sample_batch: DeTrack's crop sampler, the sequence's
description, dropped with probability `text_drop`), the paper's losses (focal + 2 GIoU + 5 L1 +
5 structure, double-sample diffusion training; ground-truth candidate elimination from
`ce_start` of the run on), AdamW, gradients clipped at norm 1. The loop (schedule, held-out
"val" AO, checkpoints last.pt / dmtrack.pt / curve.json, --resume) is fasttrack.train.loop's.

Synthetic descriptions (fasttrack.data.text): a fraction `wrong_text` of the training pool's
descriptions has one attribute wrong, as the held-out splits' do (0.2), the paper's premise
that descriptions go stale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..trackers.dmtrack import DMTrack
from ..trackers.dmtrack.model import MASK_MODULES
from ..trackers.dmtrack.train import sample_batch, train_step
from .data import TrainingData, validation_sequences
from .loop import LoopSpec, check_loop_options, run_training

__all__ = ["DMTrackTrainOptions", "train_dmtrack", "DMTRACK_CONFIGS"]

TRAIN_FORMAT = "fasttrack.train.dmtrack/1"
DMTRACK_CONFIGS = {"tiny": DMTrack.tiny, "dmtrack256": DMTrack.dmtrack256}


@dataclass
class DMTrackTrainOptions:
    """What a DMTrack training run does (the CLI's options, same names)."""

    config: str = "tiny"
    mask_module: str = "diffusion"
    double_sample: bool = True
    data: tuple = ("synthetic",)
    out: str = "dmtrack-train"
    minutes: float | None = None
    steps: int | None = None
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    center_jitter: float = 1.5
    augment: float = 0.0
    text_drop: float = 0.1
    wrong_text: float = 0.2
    ce_start: float = 0.5
    ce_keep: float = 0.7
    init_vit: str | None = None
    seed: int = 0
    eval_every: int = 250
    val_sequences: int = 24
    val_frames: int = 60
    device: str = "cpu"
    resume: bool = False
    progress: bool = True

    def check(self) -> None:
        if self.config not in DMTRACK_CONFIGS:
            raise ValueError(f"config must be one of {sorted(DMTRACK_CONFIGS)}, got {self.config!r}")
        if self.mask_module not in MASK_MODULES:
            raise ValueError(f"--mask-module must be one of {MASK_MODULES}, got {self.mask_module!r}")
        check_loop_options(self)
        for name in ("text_drop", "wrong_text", "ce_start", "augment"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.ce_keep <= 1.0:
            raise ValueError(f"--ce-keep must be in (0, 1], got {self.ce_keep}")
        if not self.center_jitter >= 0:
            raise ValueError(f"--center-jitter must be >= 0, got {self.center_jitter}")


def train_dmtrack(opts: DMTrackTrainOptions, log=print) -> dict:
    """Train a DMTrack as `opts` says (module docstring). Returns run_training's dict: "tracker"
    (best-val weights, eval mode), "curve", "best_ao", "steps", "minutes", "out"."""
    opts.check()
    device = torch.device(opts.device)
    tracker = DMTRACK_CONFIGS[opts.config](seed=opts.seed, device=device, mask_module=opts.mask_module)
    if opts.init_vit:
        from .vit_init import load_vit_weights

        report = load_vit_weights(tracker.net, opts.init_vit)
        log(f"init from {opts.init_vit} ({report['format']} layout): {len(report['loaded'])} "
            f"tensors loaded")
    opt = torch.optim.AdamW(tracker.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    data = TrainingData(opts.data, seed=opts.seed, wrong_text=opts.wrong_text)
    val = validation_sequences(opts.val_sequences, opts.val_frames, opts.data)
    rng = np.random.default_rng([606, opts.seed])
    gen = torch.Generator().manual_seed(opts.seed)
    log(f"train dmtrack {opts.config} (mask module: {opts.mask_module}, "
        f"{'double' if opts.double_sample else 'single'}-sample): "
        f"{sum(p.numel() for p in tracker.parameters()) / 1e6:.2f} M parameters, data: "
        f"{data.describe()}, held-out: {len(val)} val sequences")

    def batch():
        return sample_batch(data.sequences, opts.batch_size, tracker.config, device=device,
                            generator=rng, text_drop=opts.text_drop, center_jitter=opts.center_jitter,
                            augment=opts.augment)

    def step(b, progress):
        # candidate elimination from ce_start of the run on
        return train_step(tracker, opt, b, generator=gen, eliminate=progress >= opts.ce_start,
                          ce_keep=opts.ce_keep, double_sample=opts.double_sample)

    spec = LoopSpec(f"dmtrack {opts.config}", "dmtrack.pt", TRAIN_FORMAT, batch, step,
                    lambda path: DMTrack.from_checkpoint(path, map_location=device))
    return run_training(tracker, opt, data, val, {"numpy": rng, "torch": gen}, spec, opts, log)
