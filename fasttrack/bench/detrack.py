"""DeTrack benchmarks: per-frame latency, multi-target throughput, FLOPs (`fasttrack bench`).

`run(device, quick=True)` returns one row per variant:
    name               "<model> eager" | "<model> compile" | "<model> patched(<backend>)"
    ms_per_frame       median latency of `update` at batch 1 (the host copy of the box included,
                       which also synchronizes the device)
    peak_mem_mb        peak memory above the start of the row's timed runs (weights excluded):
                       CUDA allocator peak, CPU sampled RSS (fasttrack.bench.harness.PeakMemory)
    tfps_1/8/64        target-frames per second tracking 1, 8, 64 targets with update_batch
    gflops             FLOPs of one step at batch 1 (torch.utils.flop_counter; 2 per MAC)
plus a row "<model> flops" with the FLOP count of DeTrack256 (meta tensors, any device) next to
the paper's 53.0 G. CPU: the `tiny` model (quick: ~30 s on 2 cores); GPU: detrack256 (and
detrack384 when quick=False). torch.compile on CPU takes minutes on small machines, so with
quick=True it is skipped there (the row says so).
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from fasttrack.bench.harness import PeakMemory

__all__ = ["run", "count_step_flops", "PAPER_GFLOPS"]

PAPER_GFLOPS = {"detrack256": 53.0, "detrack384": 117.1}


def count_step_flops(name: str = "detrack256", targets: int = 1) -> int:
    """FLOPs of one tracker step (search embedding, denoising ViT, refiner, mapping, template
    embedding for the memory) of DeTrack.<name>(), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..trackers.detrack.tracker import DeTrack

    tracker = getattr(DeTrack, name)(device="meta")
    cfg, net = tracker.config, tracker.net
    meta = torch.device("meta")
    z = torch.empty(targets, cfg.n_templates, cfg.template_tokens, cfg.dim, device=meta)
    x_img = torch.empty(targets, 3, cfg.search_size, cfg.search_size, device=meta)
    z_img = torch.empty(targets, 3, cfg.template_size, cfg.template_size, device=meta)
    prior = torch.empty(targets, 4, device=meta)
    traj = torch.empty(targets, cfg.traj_len, 4, device=meta)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.predict(z, net.embed_search(x_img), prior, traj)
        net.embed_template(z_img)
    return int(counter.get_total_flops())


def _frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _boxes(k: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.1, 0.25, k) * width
    h = rng.uniform(0.1, 0.25, k) * height
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    return np.stack([x, y, w, h], 1)


def _time_updates(tracker, frames, boxes, iters: int, warmup: int) -> list[float]:
    tracker.init_batch(frames[0], boxes)
    times = []
    for i in range(warmup + iters):
        start = time.perf_counter()
        tracker.update_batch(frames[1 + i % (len(frames) - 1)])
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def _variants(device: torch.device, quick: bool):
    """(label, setup) pairs; setup(tracker) turns the eager tracker into the variant or returns
    a reason string to skip it."""
    from fasttrack.patch import patch

    def eager(tracker):
        return None

    def compiled(tracker):
        if device.type == "cpu" and quick:
            return "skipped: torch.compile of the tiny model takes minutes on a small CPU (quick)"
        tracker.net.predict = torch.compile(tracker.net.predict)
        return None

    def patched(tracker):
        patch(tracker, backend="auto")
        return None

    backend = "triton" if device.type == "cuda" else "torch"
    return [("eager", eager), ("compile", compiled), (f"patched({backend})", patched)]


def run(device="cpu", quick: bool = True, threads: int | None = None) -> list[dict]:
    """Benchmark rows (module docstring). device: "cpu", "cuda", "cuda:1", a torch.device.
    threads: torch intra-op threads for the run (restored afterwards); on a small shared CPU
    1 thread gives far steadier numbers than the default."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is cuda but no CUDA device is available")
    if threads is not None and (int(threads) != threads or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run(device, quick)
    finally:
        torch.set_num_threads(saved)


def _run(device: torch.device, quick: bool) -> list[dict]:
    from ..trackers.detrack.tracker import DeTrack

    models = ["tiny"] if device.type == "cpu" else (["detrack256"] if quick else ["detrack256", "detrack384"])
    iters, warmup = (5, 2) if quick else (30, 5)
    counts = (1, 8, 64)
    height, width = (120, 160) if device.type == "cpu" else (480, 640)
    frames = [_frame(height, width, s) for s in range(4)]
    rows = []
    for model in models:
        flops = None
        for label, setup in _variants(device, quick):
            tracker = getattr(DeTrack, model)(seed=0).to(device).eval()
            if flops is None:
                flops = count_step_flops(model) if model != "tiny" else _tiny_flops(tracker)
            row = {"name": f"{model} {label}", "device": str(device), "gflops": flops / 1e9,
                   "threads": torch.get_num_threads()}
            reason = setup(tracker)
            if reason:
                rows.append({**row, "note": reason})
                continue
            with PeakMemory(device) as mem:
                lat = _time_updates(tracker, frames, _boxes(1, height, width), iters, warmup)
                row["ms_per_frame"] = 1e3 * statistics.median(lat)
                for k in counts:
                    n = max(2, iters // 2) if k > 8 else iters
                    times = _time_updates(tracker, frames, _boxes(k, height, width, k), n, 1)
                    row[f"tfps_{k}"] = k / statistics.median(times)
            row["peak_mem_mb"] = mem.peak_mb
            rows.append(row)
    gf = count_step_flops("detrack256") / 1e9
    rows.append({"name": "detrack256 flops", "device": "meta", "gflops": gf,
                 "gmacs": gf / 2, "paper_g": PAPER_GFLOPS["detrack256"]})
    return rows


def _tiny_flops(tracker) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    cfg, net = tracker.config, tracker.net
    dev = tracker.device
    z = torch.zeros(1, cfg.n_templates, cfg.template_tokens, cfg.dim, device=dev)
    x_img = torch.zeros(1, 3, cfg.search_size, cfg.search_size, device=dev)
    z_img = torch.zeros(1, 3, cfg.template_size, cfg.template_size, device=dev)
    prior = torch.tensor([[0.375, 0.375, 0.625, 0.625]], device=dev)
    traj = prior[:, None].repeat(1, cfg.traj_len, 1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.predict(z, net.embed_search(x_img), prior, traj)
        net.embed_template(z_img)
    return int(counter.get_total_flops())
