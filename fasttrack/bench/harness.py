"""The bench harness: one timing loop and the memory measurement, for every bench section.

Timing (`time_fn`): wall clock, synchronizing the device inside the timed region.

Memory (`PeakMemory`, `peak_memory_mb`): Peak memory of a region of code, on CUDA or on the CPU.

CUDA: the caching allocator's own counter (`torch.cuda.max_memory_allocated`) minus what was
allocated before the region: the exact peak of live tensors.

CPU: PyTorch keeps no allocator statistics for CPU tensors, so a background thread samples the
process's resident set size (/proc/self/statm) every `interval` seconds and reports the peak
above the size at entry. Large tensors are mmap-ed by glibc and returned to the system when
freed, so the RSS follows live tensor memory closely; allocations that live shorter than the
sampling interval can be missed, which is why the interval is small (0.5 ms) and why CPU peaks
are quoted as "peak RSS increase". Where /proc is missing the CPU figure is NaN.

glibc raises its mmap threshold after a large block is freed (up to 32 MiB), after which big
tensors come from the heap and are reused without touching the RSS: repeated runs would then
read as 0 MB. `_pin_mmap_threshold` fixes the threshold at 128 KiB (mallopt), which also
switches that adjustment off, so every large tensor is mapped on allocation and unmapped on free.
"""
from __future__ import annotations

import math
import os
import statistics
import threading
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

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


_pinned = False


def _pin_mmap_threshold() -> None:
    global _pinned
    if _pinned:
        return
    _pinned = True
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        M_MMAP_THRESHOLD = -3
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):  # not glibc: peaks may read low after frees
        pass


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakMemory:
    """Context manager: `with PeakMemory(device) as m: ...; m.peak_mb` (MiB above entry)."""

    def __init__(self, device="cpu", interval: float = 5e-4):
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mb = math.nan

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _pin_mmap_threshold()
        try:
            self._base = _rss_bytes()
        except OSError:
            self._base = None
            return self
        self._peak = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _rss_bytes()
            if rss > self._peak:
                self._peak = rss
            time.sleep(self.interval)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
            return False
        if self._base is None:
            return False
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes())
        self.peak_mb = (self._peak - self._base) / 2**20
        return False


def peak_memory_mb(fn, device="cpu") -> float:
    """Run fn() once and return its peak memory above the starting point, in MiB."""
    with PeakMemory(device) as m:
        fn()
    return m.peak_mb
