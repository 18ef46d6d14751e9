"""Bench section "trackers": Diff-Tracker and DINTR, patched vs unpatched (the reference).

`cases(device, quick)` gives, per (tracker, path, K targets), two cases named
"<tracker> <model> patched(<backend>)" | "... unpatched":
    phase "update"  unit "frame": one `update_batch` of K targets (ends with the host copy of
                    the boxes, which synchronizes the device), in steady state: after warm-up
                    frames, Diff-Tracker's online prompt updater active. K = 1 rows give
                    frames/s, K > 1 rows target-frames/s (K x frames per second).
    phase "init"    unit "call": one `init_batch`, the first-frame learning (Diff-Tracker:
                    `prompt_steps` Adam steps of prompt learning; DINTR: `init_steps` of token
                    learning, a backward through the recorded maps); learning_steps and
                    ms_per_learning_step (ms / steps) beside it.
DINTR's update is its whole frame at the shipped settings: the crops, the S timestep labels
in one batched UNet call at the next frame's latents, the readout (with finetune_steps or
reinject_steps > 0, as in the paper, also the in-place fine-tuning on the frame pair and the
token re-fit: backwards through the UNet, where the paper's 3.2 s per frame go).
DINTR rows carry interp_steps, the interpolation steps of its frame (what its update ran).
Every update row also carries ops_per_frame, host_reads, host_writes and host_ms: one more,
untimed `update_batch` after the measured ones under FrameWatch (harness.watch_frame).
CPU: the shipped tiny-sd trackers (`pretrained()`) at 96 x 128. quick (the default of
`fasttrack bench`): K = 1 and 4, DINTR with 2 interpolation steps and 3 learning steps,
Diff-Tracker with 5 prompt-learning steps and its updater from frame 3; `--full` (quick=False):
K = 1, 4 and 8 at the shipped settings (100 learning steps), more timed calls.
CUDA: the SD 2.1 architecture with random weights at 480 x 640 frames (maps at 64 x 64,
float16), built in memory once (no weights are downloaded) and shared by every case.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import torch

import fasttrack

from .harness import Case, watch_frame

__all__ = ["cases", "build", "frames_and_boxes"]


def frames_and_boxes(num_frames: int, size: tuple[int, int], targets: int, seed: int = 0):
    """A synthetic sequence's frames and `targets` init boxes ((K, 4), the sprite box first,
    then shifted copies inside the frame)."""
    from ..data.synthetic import synthetic_sequence

    H, W = size
    seq = synthetic_sequence(num_frames, size=size, sprite_size=(H // 4, W // 4), seed=seed)
    frames = [seq[i] for i in range(num_frames)]
    b0 = seq.gt[0].astype(np.float64)
    boxes = [b0]
    for k in range(1, targets):
        x = (b0[0] + 0.17 * k * W) % (W - b0[2])
        y = (b0[1] + 0.11 * k * H) % (H - b0[3])
        boxes.append(np.array([x, y, b0[2], b0[3]]))
    return frames, np.stack(boxes)


def build(tracker: str, model: str, device, *, dtype=torch.float32, patched: bool = True,
          backend: str = "auto", quick: bool = True, components=None, **settings):
    """A benchmark tracker: tracker "diff_tracker" or "dintr"; model "tiny" (tiny(seed=0)),
    "tiny-sd" (pretrained(): the shipped tiny-sd model) or "sd2.1" (random SD 2.1 weights; pass
    `components` to reuse one copy of the model)."""
    from ..trackers.diff_tracker import DiffTracker
    from ..trackers.diffusion.sd import random_components
    from ..trackers.dintr import DINTR

    cls = {"diff_tracker": DiffTracker, "dintr": DINTR}[tracker]
    if model == "tiny":
        tr = cls.tiny(0, device=device, dtype=dtype, **settings)
    elif model == "tiny-sd":
        tr = cls.pretrained(device=device, dtype=dtype, **settings)
    elif model == "sd2.1":
        if components is None:
            components = random_components("sd2.1", seed=0, device=device, dtype=dtype)
        defaults = (dict(prompt_steps=5 if quick else 50) if tracker == "diff_tracker"
                    else dict(init_steps=5 if quick else 20, num_steps=5))
        tr = cls(components, **{**defaults, **settings})
    else:
        raise ValueError(f"model must be 'tiny', 'tiny-sd' or 'sd2.1', got {model!r}")
    # Shared components may come patched from an earlier build (with another backend).
    fasttrack.unpatch(tr)
    return fasttrack.patch(tr, backend=backend) if patched else tr


def _learning_steps(tr) -> int:
    return int(getattr(tr, "prompt_steps", getattr(tr, "init_steps", 0)))


def cases(device, quick: bool = False) -> list[Case]:
    """The section's cases (module docstring). ImportError without diffusers (the section is
    then skipped)."""
    import diffusers  # noqa: F401  (checked here: a missing package skips the whole section)

    device = torch.device(device)
    on_gpu = device.type == "cuda"
    model = "sd2.1" if on_gpu else "tiny-sd"
    dtype = torch.float16 if on_gpu else torch.float32
    # The fused path on CPU is the "torch" backend; "auto" could pick Triton's interpreter.
    backend = "auto" if on_gpu else "torch"
    size = (480, 640) if on_gpu else (96, 128)
    # Timed calls per case (None: the harness default, 3 on the CPU). An init call is several
    # learning steps (forward and backward through the UNet): fewer of them.
    repeat = {"update": (5 if on_gpu else None) if quick else (20 if on_gpu else 10),
              "init": 2 if quick else 5}
    target_counts = (1, 4) if quick else (1, 4, 8)

    @functools.cache
    def components():
        if not on_gpu:
            return None
        from ..trackers.diffusion.sd import random_components

        return random_components("sd2.1", seed=0, device=device, dtype=dtype)

    built = {}  # the tracker of the case that runs now, for its check (interp_steps)

    def setup(tracker, patched, extra, warmup, k, phase):
        # A tracker per case, built when the case runs: building an unpatched tracker on the
        # shared GPU model unpatches it, so a tracker must not outlive its case.
        tr = built["tracker"] = build(tracker, model, device, dtype=dtype, patched=patched,
                                      backend=backend, quick=quick, components=components(), **extra)
        frames, boxes = frames_and_boxes(warmup + 2, size, k)
        if phase == "init":
            def init():
                tr.init_batch(frames[0], boxes)
                return _learning_steps(tr)  # the output of the memory run: per_step reads it
            return init
        tr.init_batch(frames[0], boxes)
        for i in range(1, warmup + 1):
            tr.update_batch(frames[i])
        i = itertools.count()
        built["next_frame"] = lambda: frames[1 + next(i) % (len(frames) - 1)]
        return lambda: tr.update_batch(built["next_frame"]())

    def ran(phase, row, out):
        """What the case ran: DINTR's interpolation steps; for init, the learning steps (the
        output of the memory run) and ms per learning step."""
        tr, next_frame = built.pop("tracker", None), built.pop("next_frame", None)
        got = {"interp_steps": int(tr.num_steps)} if hasattr(tr, "num_steps") else {}
        if phase == "update" and tr is not None and next_frame is not None:
            got.update(watch_frame(tr, next_frame()))  # one more frame, untimed, under the watch
        if phase == "init" and out:
            got["learning_steps"] = out
            if "ms" in row:
                got["ms_per_learning_step"] = row["ms"] / out
        return got

    out = []
    for tracker in ("diff_tracker", "dintr"):
        # Timed frames come after the warm-up ones; for Diff-Tracker they run the online prompt
        # updater (from frame 6 by default; quick CPU runs start it at frame 3 to save time).
        # Quick CPU runs shorten the first-frame learning (3 / 5 steps instead of 20 / 50): the
        # rows still report ms per learning step.
        cpu_quick = quick and not on_gpu
        extra, warmup = ({"num_steps": 2, "init_steps": 3} if cpu_quick else {}), 1
        if tracker == "diff_tracker":
            warmup = 2 if cpu_quick else 6
            # The shipped tiny-sd Diff-Tracker runs without its updater (see tiny_sd.py); the
            # bench times the paper's full frame, updater included.
            extra = {"update_from": warmup, "use_updater": True, **({"prompt_steps": 5} if cpu_quick else {})}
        for patched in (True, False):
            name = f"{tracker} {model} {f'patched({backend})' if patched else 'unpatched'}"
            common = dict(role="fasttrack" if patched else "reference",
                          info={"dtype": str(dtype).replace("torch.", "")})
            for k in target_counts:
                for phase, unit in (("update", "frame"), ("init", "call")):
                    out.append(Case(
                        "trackers", {"name": name, "phase": phase}, unit=unit, targets=k,
                        setup=functools.partial(setup, tracker, patched, extra, warmup, k, phase),
                        group=(tracker, phase, k), check=functools.partial(ran, phase),
                        repeat=repeat[phase], **common))
    return out
