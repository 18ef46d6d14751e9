"""The one training loop behind `fasttrack train <model>`: learning-rate schedule, progress bar,
held-out evaluation, checkpoints and --resume. The model-specific parts (building the batch,
the optimizer step, the checkpoint class) come in a `LoopSpec`.

Schedule: AdamW's learning rate warms up linearly over `warmup_steps`, then decays along a
cosine to 10 % of its peak over the run (its length is --steps or --minutes, whichever ends
first). Every `eval_every` steps, and at the end, the tracker runs closed-loop over the held-out
val sequences and its AO is logged (the training curve: AO against minutes). Files in `out`:
    last.pt       everything --resume needs (weights, optimizer, step, elapsed time, curve,
                  random states), rewritten at each evaluation and at the end
    <weights>     the weights with the best validation AO so far (the tracker's `save` format,
                  `--weights` of track / eval / demo), its meta holding the recipe and curve
    curve.json    the training curve
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..eval import metrics

# Options a resumed run may change: its length, its evaluations and where it runs.
_RESUMABLE = ("steps", "minutes", "eval_every", "val_sequences", "val_frames", "device", "extra")

__all__ = ["LoopSpec", "run_training", "heldout_ao", "lr_factor", "check_loop_options"]


@dataclass
class LoopSpec:
    """What one model's training adds to the loop.

    name: the model's name (progress bar, logs). weights_file: the best-val checkpoint's file
    name. train_format: the format tag of last.pt. batch: () -> a batch. step: (batch, progress
    in [0, 1], the fraction of the run done) -> float losses with "total" and "box_iou". load: path -> the tracker a weights file holds.
    """

    name: str
    weights_file: str
    train_format: str
    batch: Callable[[], dict]
    step: Callable[[dict, float], dict]
    load: Callable[[Path], object]


def check_loop_options(opts) -> None:
    """ValueError (naming the CLI option) for loop options out of range: minutes / steps
    (at least one), batch_size, eval_every, val_sequences, val_frames, lr, weight_decay,
    warmup_steps."""
    if opts.minutes is None and opts.steps is None:
        raise ValueError("give --minutes or --steps (or both: whichever ends first)")
    if opts.minutes is not None and not opts.minutes > 0:
        raise ValueError(f"--minutes must be > 0, got {opts.minutes}")
    if opts.steps is not None and opts.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {opts.steps}")
    for name in ("batch_size", "eval_every", "val_sequences"):
        if getattr(opts, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}")
    if opts.val_frames < 2:
        raise ValueError(f"--val-frames must be >= 2, got {opts.val_frames}")
    if not opts.lr > 0 or opts.weight_decay < 0 or opts.warmup_steps < 0:
        raise ValueError("--lr must be > 0, --weight-decay and --warmup-steps >= 0")


def heldout_ao(tracker, sequences) -> dict:
    """Track each sequence closed-loop from its first box; AO (mean IoU over the frames after
    the first) per sequence and its mean. Returns {"ao", "per_sequence": {name: ao}}."""
    per = {}
    module = isinstance(tracker, torch.nn.Module)   # the diffusion trackers are not modules
    was = tracker.training if module else None
    if module:
        tracker.eval()
    for seq in sequences:
        boxes, _ = tracker.run(seq, seq.gt[0], progress=False)
        per[seq.name] = float(metrics(boxes, seq.gt, skip_first=True)["ao"])
    if module:
        tracker.train(was)
    return {"ao": float(np.mean(list(per.values()))), "per_sequence": per}


def lr_factor(step: int, progress: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps times a cosine from 1 to 0.1 over progress 0 .. 1."""
    warm = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(progress, 1.0))))


def run_training(tracker, opt: torch.optim.Optimizer, data, val: list, rngs: dict, spec: LoopSpec,
                 opts, log=print) -> dict:
    """Train `tracker` with `opt` as `opts` (steps, minutes, lr, warmup_steps, eval_every, out,
    resume, progress) says. data: a TrainingData (its step() is called once per step). rngs:
    {"numpy": np Generator, "torch": torch Generator} saved for --resume. Returns {"tracker"
    (best-val weights, eval mode), "curve", "best_ao", "steps", "minutes", "out"}."""
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    rng, gen = rngs["numpy"], rngs["torch"]
    step, elapsed, curve, best = 0, 0.0, [], -1.0
    last = out / "last.pt"
    if opts.resume:
        if not last.is_file():
            raise ValueError(f"--resume: no {last} to resume from")
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck.get("format") != spec.train_format or ck.get("config") != tracker.config.to_dict():
            raise ValueError(f"--resume: {last} was written for another model or format")
        # a resumed run may run longer or evaluate differently, not change its objective or data
        saved = ck.get("recipe", {})
        now = {k: v for k, v in asdict(opts).items() if k not in ("progress", "resume", "out")}
        changed = sorted(k for k in set(saved) | set(now) if k not in _RESUMABLE
                         and saved.get(k) != now.get(k))
        if changed:
            raise ValueError(f"--resume: {last} was trained with other {', '.join(changed)} "
                             f"({', '.join(f'{k}={saved.get(k)!r}' for k in changed)})")
        tracker.load_state_dict(ck["state_dict"])
        opt.load_state_dict(ck["optimizer"])
        data.load_state_dict(ck["data"])
        rng.bit_generator.state = ck["rng"]
        gen.set_state(ck["torch_rng"])
        step, elapsed, curve, best = ck["step"], ck["elapsed_s"], ck["curve"], ck["best_ao"]
        log(f"resumed {last} at step {step} ({elapsed / 60:.1f} min)")
    recipe = {k: v for k, v in asdict(opts).items() if k not in ("progress", "resume", "out")}

    def limit_reached():
        return ((opts.steps is not None and step >= opts.steps)
                or (opts.minutes is not None and elapsed >= 60 * opts.minutes))

    def progress():
        return max(step / opts.steps if opts.steps else 0.0,
                   elapsed / (60 * opts.minutes) if opts.minutes else 0.0)

    def evaluate_and_save(loss, box_iou):
        nonlocal best
        res = heldout_ao(tracker, val)
        curve.append({"step": step, "minutes": round(elapsed / 60, 3), "val_ao": round(res["ao"], 4),
                      "loss": round(loss, 4), "box_iou": round(box_iou, 4)})
        if res["ao"] > best:
            best = res["ao"]
            tracker.save(out / spec.weights_file, meta={"recipe": recipe, "step": step,
                                                        "minutes": elapsed / 60, "val": res,
                                                        "curve": curve})
        torch.save({"format": spec.train_format, "config": tracker.config.to_dict(),
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
               desc=f"train {spec.name}", disable=not opts.progress, dynamic_ncols=True)
    ema_loss = ema_iou = None
    while not limit_reached():
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = opts.lr * lr_factor(step, progress(), opts.warmup_steps)
        losses = spec.step(spec.batch(), progress())
        data.step()
        step += 1
        elapsed += time.perf_counter() - t0
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
    log(f"best val AO {best:.3f}; weights {out / spec.weights_file}, resume state {last}")
    return {"tracker": spec.load(out / spec.weights_file).eval(), "curve": curve, "best_ao": best,
            "steps": step, "minutes": elapsed / 60, "out": out}
