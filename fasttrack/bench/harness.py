"""The bench harness: cases in, rows out, with ONE timing loop and ONE memory method per device.

Every section module (ops, recorder, detrack, trackers) exposes `cases(device, quick)`, a list of
`Case`; `run_cases` turns them into rows for `fasttrack bench`, and benchmarks/conftest.py turns
the same cases into pytest-benchmark runs. Nothing else in fasttrack.bench times or measures.

Timing (`time_ms`): `warmup` untimed calls, then up to `repeat` timed calls, stopping early once
`max_seconds` of timed calls are spent (at least one always runs). Each timed call is
`synced(fn)`: fn followed by a device synchronization, so that asynchronous CUDA work is inside
the clock readings. A row's `ms` is the median.

Memory (`peak_allocated_mb`), in its own untimed call after the timed ones (the CPU profiler
costs time): the peak of live tensor memory above the level at the start of the call, "peak
allocated MB" (MiB).
  CUDA: torch.cuda.max_memory_allocated minus memory_allocated at the start.
  CPU:  PyTorch keeps no allocator statistics for CPU tensors, so torch.profiler with
        profile_memory=True records every allocation and free ("[memory]" events with signed
        byte counts); summed in time order they give the live bytes, whose maximum is the peak.
        Frees of tensors made before the call count negative, so the peak is >= 0. (The
        process's RSS is no measure of this: glibc keeps freed blocks mapped and serves new
        tensors from them, so consecutive rows would read alike.)

Frame watch (`watch_frame`), for a tracker's per-frame row, in one more untimed call after the
memory run (the sections call it from their case's `check`): one `update_batch` under
fasttrack.trackers.watch.FrameWatch (through `frame_profile`, the one counter), giving
ops_per_frame (aten ops dispatched), host_reads / host_writes (host <-> device transfers of the
frame) and host_ms (wall time of that update under the watch). The watch runs Python for every
op, so host_ms is an upper bound of the frame's host time (on a CUDA device it also holds the
wait for the device in the frame's final read); the row's `ms` is the plain, unwatched time of
the same update.
"""
from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["Case", "UNITS", "ROLES", "time_ms", "synced", "peak_allocated_mb", "measure",
           "run_cases", "add_ratios", "watch_frame"]

UNITS = ("call", "UNet step", "frame")
ROLES = ("reference", "fasttrack", "other")

# Harness defaults per device type: (warmup, repeat, max_seconds). CUDA calls are short and
# noisy (clocks, launch queues): more repeats. CPU calls of the bench models take up to seconds.
_DEFAULTS = {"cuda": (2, 10, 10.0), "cpu": (1, 3, 20.0)}

_clock = time.perf_counter  # the clock of the timing loop (tests replace it to watch the order)


@dataclass(eq=False)
class Case:
    """One benchmark case: what one row measures.

    section  the bench section ("ops", "recorder", "detrack", "trackers")
    labels   the row's identifying fields, in order (e.g. shape, op, impl, pass; or name, phase)
    unit     what one timed call does: "call", "UNet step" or "frame"; None for an untimed row of
             facts (`check` gives its fields)
    setup    () -> the callable to time, built when the case runs (models, inputs, tracker state)
    targets  targets tracked per call (K), where it applies
    flops    FLOPs of one timed call (algorithmic count), or a () -> float computing them
    info     constant row fields (dtype, model, learning steps, ...)
    role     "reference" (the eager baseline: speedups are relative to it), "fasttrack", or
             "other" (map-free floors, torch.compile of the reference)
    group    cases with equal `group` are compared with the group's reference row
    skip     why this case cannot run here: its row carries the reason, nothing is timed
    warmup, repeat  per-case overrides of the harness defaults (expensive calls)
    check    (row, out) -> extra row fields, from the measured row and the output of the memory
             run (a correctness figure, a per-step time); for an untimed row, its fields
    """

    section: str
    labels: dict
    unit: str | None = "call"
    setup: Callable[[], Callable[[], Any]] | None = None
    targets: int | None = None
    flops: float | Callable[[], float] | None = None
    info: dict = field(default_factory=dict)
    role: str = "fasttrack"
    group: Any = None
    skip: str | None = None
    warmup: int | None = None
    repeat: int | None = None
    check: Callable[[dict, Any], dict] | None = None

    def __post_init__(self):
        if self.unit not in UNITS + (None,):
            raise ValueError(f"unit must be one of {UNITS} or None, got {self.unit!r}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.targets is not None and (not isinstance(self.targets, int) or self.targets < 1):
            raise ValueError(f"targets must be an int >= 1 or None, got {self.targets!r}")
        if self.unit is None and self.check is None:
            raise ValueError("an untimed case (unit None) needs `check` to give its fields")
        if self.unit is not None and self.setup is None and self.skip is None:
            raise ValueError("a timed case needs `setup` (or `skip`, the reason it cannot run)")

    @property
    def id(self) -> str:
        """A short id (pytest parametrization, progress lines)."""
        parts = [str(v) for v in self.labels.values()]
        return "-".join(parts + ([f"x{self.targets}"] if self.targets else [])).replace(" ", "_")

    def row(self, device) -> dict:
        """The row's identifying and constant fields, before any measurement."""
        row = {"section": self.section, **self.labels}
        if self.targets is not None:
            row["targets"] = self.targets
        if self.unit is not None:
            row["unit"] = self.unit
        return {**row, "role": self.role, **self.info, "device": str(device)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synced(fn: Callable[[], Any], device="cpu") -> Callable[[], Any]:
    """fn followed by a synchronization of `device`: the callable every timing measures."""
    device = torch.device(device)

    def call():
        out = fn()
        _sync(device)
        return out
    return call


def time_ms(fn, device="cpu", *, warmup: int = 1, repeat: int = 3, max_seconds: float = 20.0) -> list[float]:
    """Milliseconds of each timed call of fn (the module docstring's loop); at least one."""
    device = torch.device(device)
    call = synced(fn, device)
    for _ in range(warmup):
        call()
    _sync(device)
    times, spent = [], 0.0
    for _ in range(max(1, repeat)):
        t0 = _clock()
        call()
        dt = _clock() - t0
        times.append(dt * 1e3)
        spent += dt
        if spent >= max_seconds:
            break
    return times


@contextlib.contextmanager
def _quiet_fds():
    """Kineto writes a "USDT: ... profiler_start/stop" line from C++ at every profiler start and
    stop; silence file descriptors 1 and 2 around the profiled call so that `fasttrack bench`
    tables stay readable. An exception raised inside still propagates (and prints) after."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved + [devnull]:
            os.close(fd)


def peak_allocated_mb(fn, device="cpu") -> tuple[Any, float]:
    """(fn(), peak allocated MB): the peak MiB of live tensor memory above the level at the
    start of the call (module docstring: CUDA allocator peak; CPU profiler allocation events)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        torch.cuda.synchronize(device)
        return out, (torch.cuda.max_memory_allocated(device) - base) / 2**20
    if device.type != "cpu":
        raise ValueError(f"peak_allocated_mb measures cpu or cuda devices, got {device}")
    from torch.profiler import ProfilerActivity, profile

    with _quiet_fds(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:  # allocations positive, frees negative
        live += nbytes
        peak = max(peak, live)
    return out, peak / 2**20


def watch_frame(tracker, frame) -> dict:
    """Row fields of one extra, untimed `tracker.update_batch(frame)` under FrameWatch (module
    docstring): ops_per_frame, host_reads, host_writes (ints) and host_ms. A watch that fails
    (an op the mode cannot follow) gives "watch_error" instead: the row's timing stands."""
    from ..trackers.watch import frame_profile

    try:
        p = frame_profile(tracker, [frame])
    except Exception as e:
        return {"watch_error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"}
    return {"ops_per_frame": int(p["ops_per_frame"]), "host_reads": int(p["reads_per_frame"]),
            "host_writes": int(p["writes_per_frame"]), "host_ms": p["host_ms_per_frame"]}


def _oom(e: BaseException) -> bool:
    return isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or "out of memory" in str(e)


def measure(case: Case, device, *, warmup: int | None = None, repeat: int | None = None,
            max_seconds: float | None = None, timer=None, catch: bool = True) -> dict:
    """The row of one case: its fields, then ms (median per unit), runs, peak_allocated_mb,
    gflops / tflops where FLOPs are known, frames_per_s (one target per frame) or
    target_frames_per_s (K targets) for unit "frame", and the case's check fields.

    Arguments override the case's warmup / repeat, which override the device defaults.
    timer(fn, device, warmup=, repeat=, max_seconds=) -> list of ms replaces time_ms (the
    pytest-benchmark suites pass one); it may return [] (timing disabled). With catch, an
    exception becomes the row's "error" (or an "out of memory" note: a result, not a failure)."""
    device = torch.device(device)
    row = case.row(device)
    if case.skip:
        return {**row, "note": case.skip}
    if case.unit is None:
        return {**row, **case.check(row, None)}
    d_warmup, d_repeat, d_max = _DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    warmup = warmup if warmup is not None else (case.warmup if case.warmup is not None else d_warmup)
    repeat = repeat if repeat is not None else (case.repeat if case.repeat is not None else d_repeat)
    try:
        fn = case.setup()
        times = (timer or time_ms)(fn, device, warmup=warmup, repeat=repeat,
                                   max_seconds=max_seconds if max_seconds is not None else d_max)
        out, peak = peak_allocated_mb(fn, device)
        if times:
            ms = statistics.median(times)
            row.update(ms=ms, runs=len(times))
        row["peak_allocated_mb"] = peak
        flops = case.flops() if callable(case.flops) else case.flops
        if flops:
            row["gflops"] = flops / 1e9
            if times:
                row["tflops"] = flops / (ms * 1e-3) / 1e12
        if times and case.unit == "frame":
            # One target per frame: frames/s. K targets tracked per frame: K x frames / s,
            # "target-frames/s" (the frames themselves come at 1000 / ms per second).
            k = case.targets or 1
            row["frames_per_s" if k == 1 else "target_frames_per_s"] = 1e3 * k / ms
        if case.check is not None:
            row.update(case.check(row, out))
    except Exception as e:
        if not catch:
            raise
        msg = (str(e).splitlines() or [""])[0][:200]
        row.update(ms=math.nan, peak_allocated_mb=math.nan)
        if _oom(e):  # the materializing reference running out of memory is a result
            row["note"] = f"out of memory: {type(e).__name__}: {msg}"
        else:
            row["error"] = f"{type(e).__name__}: {msg}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def add_ratios(rows: list[dict], cases: list[Case]) -> None:
    """speedup (reference ms / ms) and mem_ratio (peak / reference peak) of every row whose
    case has a group with a reference row, in place."""
    refs = {c.group: r for c, r in zip(cases, rows) if c.role == "reference" and c.group is not None}
    for c, r in zip(cases, rows):
        ref = refs.get(c.group) if c.group is not None else None
        if ref is None or ref is r:
            continue
        if _number(ref.get("ms"), 0) and _number(r.get("ms"), 0):
            r["speedup"] = ref["ms"] / r["ms"]
        if _number(ref.get("peak_allocated_mb"), 0) and _number(r.get("peak_allocated_mb")):
            r["mem_ratio"] = r["peak_allocated_mb"] / ref["peak_allocated_mb"]


def _number(x, above=None) -> bool:
    """x is a finite number (not a bool), and > `above` when given."""
    ok = isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
    return ok and (above is None or x > above)


def run_cases(cases: list[Case], device, *, progress=None, start=None, **kwargs) -> list[dict]:
    """measure(case, device, **kwargs) for each case, then add_ratios; start(case) before each,
    progress(row) after each."""
    rows = []
    for case in cases:
        if start is not None:
            start(case)
        rows.append(measure(case, device, **kwargs))
        if progress is not None:
            progress(rows[-1])
    add_ratios(rows, cases)
    return rows
