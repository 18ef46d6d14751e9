"""`train_detrack`: the DeTrack training loop behind `fasttrack train detrack`.

One step: sample a batch (fasttrack.trackers.detrack.train.sample_batch: jittered search crops,
noised or static trajectories), the paper's losses with t drawn near infer_t and, by default,
the tracker's own fixed noise sample (detrack_losses, `fixed_noise`), AdamW, gradients
clipped at norm 1. The loop itself (schedule, held-out "val" AO every `eval_every` steps over
`val_sequences` x `val_frames` frames, checkpoints last.pt / detrack.pt / curve.json, --resume)
is fasttrack.train.loop's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..trackers.detrack import DeTrack
from ..trackers.detrack.model import BOX_HEADS
from ..trackers.detrack.train import LossWeights, default_t_min, sample_batch, train_step
from .data import TrainingData, validation_sequences
from .loop import LoopSpec, check_loop_options, heldout_ao, run_training

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
    augment: float = 0.0
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
        check_loop_options(self)
        if not 0.0 <= self.close_distractors <= 1.0:
            raise ValueError(f"--close-distractors must be in [0, 1], got {self.close_distractors}")
        if not 0.0 <= self.augment <= 1.0:
            raise ValueError(f"--augment must be in [0, 1], got {self.augment}")
        if not 0.0 <= self.small_jitter_prob <= 1.0:
            raise ValueError(f"--small-jitter-prob must be in [0, 1], got {self.small_jitter_prob}")
        if not (self.center_jitter >= 0 and self.small_jitter >= 0):
            raise ValueError("--center-jitter and --small-jitter must be >= 0")
        if not 0.0 <= self.fixed_noise <= 1.0:
            raise ValueError(f"--fixed-noise must be in [0, 1], got {self.fixed_noise}")
        if not self.denoise_weight >= 0:
            raise ValueError(f"--denoise-weight must be >= 0, got {self.denoise_weight}")


def train_detrack(opts: TrainOptions, log=print) -> dict:
    """Train a DeTrack as `opts` says (module docstring). Returns {"tracker" (the best-val
    weights, eval mode), "curve" [{step, minutes, val_ao, loss, box_iou}], "best_ao", "steps",
    "minutes", "out"}."""
    opts.check()
    device = torch.device(opts.device)
    tracker = CONFIGS[opts.config](seed=opts.seed, device=device, box_head=opts.box_head)
    if opts.init_vit:
        from .vit_init import load_vit_weights

        report = load_vit_weights(tracker.net, opts.init_vit)
        log(f"init from {opts.init_vit}: {len(report['loaded'])} tensors loaded")
    opt = torch.optim.AdamW(tracker.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    data = TrainingData(opts.data, seed=opts.seed, close_distractors=opts.close_distractors)
    val = validation_sequences(opts.val_sequences, opts.val_frames, opts.data)
    rng = np.random.default_rng([505, opts.seed])
    gen = torch.Generator().manual_seed(opts.seed)
    t_min = default_t_min(tracker.config) if opts.t_min is None else opts.t_min
    weights = LossWeights(denoise=opts.denoise_weight)
    log(f"train {opts.config} ({opts.box_head} box head): {sum(p.numel() for p in tracker.parameters()) / 1e6:.2f} M "
        f"parameters, data: {data.describe()}, t in [{t_min}, {tracker.config.infer_t}], "
        f"held-out: {len(val)} val sequences")

    def batch():
        return sample_batch(data.sequences, opts.batch_size, tracker.config, device=device,
                            generator=rng, center_jitter=opts.center_jitter,
                            small_jitter=opts.small_jitter,
                            small_jitter_prob=opts.small_jitter_prob, augment=opts.augment)

    def step(b, progress):
        return train_step(tracker, opt, b, generator=gen, t_min=t_min, weights=weights,
                          fixed_noise=opts.fixed_noise)

    spec = LoopSpec(opts.config, "detrack.pt", TRAIN_FORMAT, batch, step,
                    lambda path: DeTrack.from_checkpoint(path, map_location=device))
    return run_training(tracker, opt, data, val, {"numpy": rng, "torch": gen}, spec, opts, log)
