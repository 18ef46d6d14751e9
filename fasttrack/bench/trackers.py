"""Diff-Tracker and DINTR benchmarks: per-frame time and peak memory, patched vs unpatched
(`fasttrack bench`, section "trackers"; benchmarks/bench_trackers.py runs the same builders).

`run(device, quick=True)` returns one row per (tracker, path, targets):
    name            "<tracker> <model> patched(<backend>)" | "... unpatched"
    ms_per_frame    median wall time of `update_batch` (the host copy of the boxes, which also
                    synchronizes the device, included), steady state: Diff-Tracker rows time
                    frames with the online prompt updater active
    fps             targets x frames per second (= 1000 K / ms_per_frame)
    peak_mem_mb     peak memory during the timed updates above the level at their start:
                    CUDA max_memory_allocated, CPU peak RSS increase (fasttrack.bench.harness.PeakMemory)
    init_ms         `init_batch` time: the first-frame prompt learning (Diff-Tracker,
                    `prompt_steps` Adam steps) or token learning (DINTR, `init_steps`)
    init_peak_mem_mb  the same memory measure during init (backward through the maps)
    ms_per_learning_step  init_ms / steps
CPU: the `tiny` models (quick: 2 timed frames, DINTR with 2 interpolation steps; about
50 s of CPU time on 2 cores). CUDA: the SD 2.1 architecture with random
weights at 512 x 512 (maps at 64 x 64, float16), built in memory (no weights are downloaded).
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

import fasttrack

from .harness import PeakMemory

__all__ = ["run", "build", "frames_and_boxes"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    """A benchmark tracker: tracker "diff_tracker" or "dintr"; model "tiny" (tiny(seed=0)) or
    "sd2.1" (random SD 2.1 weights; pass `components` to reuse one copy of the model)."""
    from ..trackers.diff_tracker import DiffTracker
    from ..trackers.diffusion.sd import random_components
    from ..trackers.dintr import DINTR

    cls = {"diff_tracker": DiffTracker, "dintr": DINTR}[tracker]
    if model == "tiny":
        tr = cls.tiny(0, device=device, dtype=dtype, **settings)
    elif model == "sd2.1":
        if components is None:
            components = random_components("sd2.1", seed=0, device=device, dtype=dtype)
        defaults = (dict(prompt_steps=5 if quick else 50) if tracker == "diff_tracker"
                    else dict(init_steps=5 if quick else 20, num_steps=5))
        tr = cls(components, **{**defaults, **settings})
    else:
        raise ValueError(f"model must be 'tiny' or 'sd2.1', got {model!r}")
    # Shared components may come patched from an earlier build (with another backend).
    fasttrack.unpatch(tr)
    return fasttrack.patch(tr, backend=backend) if patched else tr


def _learning_steps(tr) -> int:
    return int(getattr(tr, "prompt_steps", getattr(tr, "init_steps", 0)))


def measure(tr, frames, boxes, device, *, warmup: int, iters: int) -> dict:
    """Time init_batch, `warmup` untimed updates, then `iters` timed updates (cycling frames)."""
    device = torch.device(device)
    _sync(device)
    with PeakMemory(device) as m_init:
        t0 = time.perf_counter()
        tr.init_batch(frames[0], boxes)
        _sync(device)
        init_s = time.perf_counter() - t0
    n = len(frames) - 1
    for i in range(warmup):
        tr.update_batch(frames[1 + i % n])
    times = []
    with PeakMemory(device) as m_upd:
        for i in range(warmup, warmup + iters):
            t0 = time.perf_counter()
            tr.update_batch(frames[1 + i % n])    # ends with the boxes' host copy: synchronizes
            times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    steps = _learning_steps(tr)
    return {"ms_per_frame": ms, "fps": 1e3 * boxes.shape[0] / ms, "peak_mem_mb": m_upd.peak_mb,
            "init_ms": 1e3 * init_s, "init_peak_mem_mb": m_init.peak_mb, "learning_steps": steps,
            "ms_per_learning_step": 1e3 * init_s / steps if steps else float("nan")}


def run(device="cpu", quick: bool = True) -> list[dict]:
    """Benchmark rows (module docstring). device: "cpu", "cuda", "cuda:1" or a torch.device."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is cuda but no CUDA device is available")
    on_gpu = device.type == "cuda"
    model = "sd2.1" if on_gpu else "tiny"
    dtype = torch.float16 if on_gpu else torch.float32
    # The fused path on CPU is the "torch" backend; "auto" could pick Triton's interpreter.
    backend = "auto" if on_gpu else "torch"
    size = (480, 640) if on_gpu else (96, 128)
    iters = (2 if quick else 10) if not on_gpu else (5 if quick else 20)
    target_counts = (1, 4) if quick else (1, 4, 8)
    components = None
    if on_gpu:
        from ..trackers.diffusion.sd import random_components

        components = random_components("sd2.1", seed=0, device=device, dtype=dtype)
    rows = []
    for tracker in ("diff_tracker", "dintr"):
        # Timed frames come after the warm-up ones; for Diff-Tracker they run the online prompt
        # updater (from frame 6 by default; quick CPU runs start it at frame 3 to save time).
        extra, warmup = ({"num_steps": 2} if quick and not on_gpu else {}), 1
        if tracker == "diff_tracker":
            warmup = 2 if (quick and not on_gpu) else 6
            extra = {"update_from": warmup}
        for patched in (True, False):
            tr = build(tracker, model, device, dtype=dtype, patched=patched, backend=backend,
                       quick=quick, components=components, **extra)
            label = f"patched({backend})" if patched else "unpatched"
            for k in target_counts:
                frames, boxes = frames_and_boxes(warmup + 2, size, k)
                row = {"name": f"{tracker} {model} {label}", "device": str(device), "targets": k,
                       "dtype": str(dtype).replace("torch.", "")}
                try:
                    row.update(measure(tr, frames, boxes, device, warmup=warmup, iters=iters))
                except torch.cuda.OutOfMemoryError as e:
                    row["note"] = f"out of memory: {str(e).splitlines()[0]}"
                    torch.cuda.empty_cache()
                rows.append(row)
            # The unpatched build of a shared model unpatches it; the next build re-patches.
            del tr
    return rows
