"""Wall-clock timing that synchronizes the device inside the timed region."""
from __future__ import annotations

import statistics
import time

import torch


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device="cpu", *, warmup: int = 1, repeat: int = 3, max_seconds: float = 20.0) -> float:
    """Median milliseconds of fn() over `repeat` runs after `warmup` runs, synchronizing the
    device before and after each run; stops early once `max_seconds` of timed runs are spent
    (at least one timed run always happens)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times, spent = [], 0.0
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent > max_seconds:
            break
    return statistics.median(times) * 1e3
