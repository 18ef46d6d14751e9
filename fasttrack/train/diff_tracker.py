"""`train_updater`: train Diff-Tracker's online prompt updater (behind
`fasttrack train diff-tracker-updater`).

The diffusion model stays frozen (the shipped tiny-sd by default, or any local SD folder with
`sd`); only the updater learns, with the paper's recipe: for each sequence the first-frame
prompt is learned, then from the sixth frame on the updater moves the prompt and the normalized
MSE between the harmonized map and the frame's box mask is minimized (Adam, lr 5e-4; the
model's own loop, DiffTracker.train_updater).

Data: labeled sequences ("synthetic": the "train" split from index 1000 on, past the frames
tiny-sd trained on; "photos": the photo "train" split from index 1000 on; or data set folders, read like `fasttrack eval` reads them) and unlabeled
ones (`unlabeled`: "synthetic" -- train-split sequences whose boxes are dropped -- or video
files / frame folders), labeled by motion (fasttrack.train.pseudo_labels; the paper used an
optical-flow model, which does not ship offline). Passes over the data repeat until `minutes`
run out (or `epochs` are done); after each, the held-out "val" AO with the updater picks the
best weights. `out` receives the tracker folder (fasttrack_diff_tracker/: settings and
updater.safetensors) that `DiffTracker.from_pretrained(sd, tracker_path=out)` reads, and
train.json (losses, val AO per pass, pseudo-label quality).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

__all__ = ["UpdaterTrainOptions", "train_updater"]


@dataclass
class UpdaterTrainOptions:
    """What an updater training run does (the CLI's options, same names)."""

    sd: str | None = None
    data: tuple = ("synthetic",)
    unlabeled: tuple = ()
    sequences: int = 24
    frames: int = 20
    epochs: int | None = None
    minutes: float | None = 10.0
    lr: float = 5e-4
    prompt_steps: int | None = None
    val_sequences: int = 6
    val_frames: int = 30
    out: str = "diff-tracker-updater"
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    settings: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.epochs is None and self.minutes is None:
            raise ValueError("give --minutes or --epochs (or both: whichever ends first)")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {self.epochs}")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")
        if self.sequences < 1 or self.frames < 7 or self.val_sequences < 1 or self.val_frames < 2:
            raise ValueError("sequences and val_sequences must be >= 1, frames >= 7 (the updater "
                             "starts at the sixth frame) and val_frames >= 2, got "
                             f"{self.sequences}, {self.frames}, {self.val_sequences}, {self.val_frames}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        steps = self.settings.get("prompt_steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
            raise ValueError(f"--prompt-steps must be an int >= 0, got {steps!r}")
        if not self.data and not self.unlabeled:
            raise ValueError("give labeled --data or --unlabeled video (or both)")


def _labeled(opts) -> list:
    from ..data import open_sequences
    from ..data.synthetic import synthetic_split

    seqs = []
    for src in opts.data:
        if src == "synthetic":
            seqs += synthetic_split("train", num=opts.sequences, num_frames=opts.frames, start=1000)
        elif src == "photos":
            from ..data.photo_sequences import photo_split

            seqs += photo_split("train", num=opts.sequences, num_frames=opts.frames, start=1000)
        else:
            seqs += list(open_sequences(src))[: opts.sequences]
    return seqs


def _unlabeled(opts) -> tuple[list, list]:
    """Pseudo-labeled sequences and, where ground truth exists, their labels' mean IoU to it."""
    from ..data.sequences import list_images, read_image, Sequence
    from ..data.synthetic import synthetic_split
    from ..data.video import load_video
    from ..eval.metrics import iou
    from .pseudo_labels import pseudo_label_sequence

    raw = []
    for src in opts.unlabeled:
        if src == "synthetic":
            # Another stretch of the train stream, boxes dropped (kept aside to score the labels).
            raw += synthetic_split("train", num=opts.sequences, num_frames=opts.frames, start=3000)
        elif os.path.isdir(src):
            files = list_images(src)[: opts.frames]
            raw.append(Sequence(os.path.basename(os.path.normpath(src)), [read_image(f) for f in files], None))
        else:
            seq = load_video(src)
            raw.append(Sequence(seq.name, [f for _, f in zip(range(opts.frames), seq.frames)], None))
    out, quality = [], []
    for seq in raw:
        lab = pseudo_label_sequence(seq)
        out.append(lab)
        if "true_gt" in lab.meta:
            quality.append(float(iou(lab.gt, lab.meta["true_gt"]).mean()))
    return out, quality


def train_updater(opts: UpdaterTrainOptions) -> dict:
    """Train the updater; writes `opts.out` (module docstring) and returns the log."""
    from ..trackers.diff_tracker import DiffTracker
    from ..trackers.diff_tracker.updater import PromptUpdater, updater_config_for
    from ..trackers.diffusion.tiny_sd import shipped_folder
    from .data import validation_sequences
    from .loop import heldout_ao

    opts.check()
    torch.manual_seed(opts.seed)
    start = time.perf_counter()
    sd = opts.sd or shipped_folder()
    probe = DiffTracker.from_pretrained(sd, device=opts.device, **opts.settings)
    D = int(probe.sd.unet.config.cross_attention_dim)
    # A fresh updater (identity at the start), sized for the model (toy or paper size).
    tracker = DiffTracker(probe.sd, updater=PromptUpdater(updater_config_for(D, probe.num_tokens)),
                          **{k: getattr(probe, k) for k in DiffTracker._config_keys})
    del probe
    labeled = _labeled(opts)
    pseudo, quality = _unlabeled(opts)
    seqs = labeled + pseudo
    val = validation_sequences(opts.val_sequences, opts.val_frames, opts.data)
    log = {"options": {k: v for k, v in asdict(opts).items()}, "sequences": len(seqs),
           "labeled": len(labeled), "pseudo_labeled": len(pseudo),
           "pseudo_label_iou": float(np.mean(quality)) if quality else None, "passes": []}
    tracker.use_updater = False
    base = heldout_ao(tracker, val)["ao"]
    tracker.use_updater = True
    log["val_ao_without_updater"] = base
    best, best_state = heldout_ao(tracker, val)["ao"], None   # the identity updater
    log["val_ao_identity_updater"] = best
    best_state = {k: v.clone() for k, v in tracker.updater.state_dict().items()}
    rng = np.random.default_rng(opts.seed)
    epoch = 0
    opt_state = None
    while opts.epochs is None or epoch < opts.epochs:
        if opts.minutes is not None and time.perf_counter() - start > opts.minutes * 60:
            break
        order = [seqs[i] for i in rng.permutation(len(seqs))]
        losses = tracker.train_updater(order, epochs=1, lr=opts.lr, prompt_steps=opts.prompt_steps,
                                       max_frames=opts.frames, progress=opts.progress,
                                       optimizer_state=opt_state)
        opt_state = tracker._updater_opt_state
        ao = heldout_ao(tracker, val)["ao"]
        epoch += 1
        log["passes"].append({"pass": epoch, "loss": float(np.mean(losses)), "val_ao": ao,
                              "minutes": (time.perf_counter() - start) / 60})
        print(f"pass {epoch}: loss {np.mean(losses):.4f}, val AO {ao:.3f} (identity {log['val_ao_identity_updater']:.3f}, "
              f"without updater {base:.3f})", flush=True)
        if ao > best:
            best, best_state = ao, {k: v.clone() for k, v in tracker.updater.state_dict().items()}
    tracker.updater.load_state_dict(best_state)
    log["best_val_ao"] = best
    log["minutes"] = (time.perf_counter() - start) / 60
    os.makedirs(opts.out, exist_ok=True)
    tracker.save_pretrained(opts.out)
    with open(os.path.join(opts.out, "train.json"), "w") as f:
        json.dump(log, f, indent=1, default=float)
    return log
