"""pytest-benchmark suite of the diffusion trackers: Diff-Tracker and DINTR, patched vs unpatched.

    pytest benchmarks/bench_trackers.py --benchmark-json benchmarks/results/trackers-<device>.json

Rows: per-frame `update` time (ends with the host copy of the box, which synchronizes the
device), `update_batch` for 4 targets, and `init` (Diff-Tracker's first-frame prompt learning,
DINTR's token learning: a backward through the recorded maps) timed separately. extra_info
holds the peak memory of one call above its starting level (CUDA: max_memory_allocated; CPU:
peak RSS increase, fasttrack.bench.harness.PeakMemory). CPU: the `tiny` models; CUDA: the SD 2.1
architecture with random weights at 512 x 512 in float16, maps at 64 x 64 (nothing is
downloaded). The builders are fasttrack.bench.trackers's, as in `fasttrack bench`.
"""
from __future__ import annotations

import os
import sys

import pytest
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from fasttrack.bench.trackers import build, frames_and_boxes  # noqa: E402
from fasttrack.bench.harness import PeakMemory  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"
MODEL = "sd2.1" if ON_GPU else "tiny"
DTYPE = torch.float16 if ON_GPU else torch.float32
# CPU: the fused path is the "torch" backend ("auto" could pick Triton's interpreter).
BACKEND = "auto" if ON_GPU else "torch"
FRAME_HW = (480, 640) if ON_GPU else (96, 128)
ROUNDS = 10 if ON_GPU else 3
WARMUP = 6   # Diff-Tracker's online prompt updater is active from frame 6 (index 5) on


@pytest.fixture(scope="module")
def components():
    """One copy of the SD 2.1-shaped model on the GPU, shared by every tracker (None on CPU)."""
    if not ON_GPU:
        return None
    from fasttrack.trackers.diffusion.sd import random_components

    return random_components("sd2.1", seed=0, device=DEVICE, dtype=DTYPE)


def _tracker(name, variant, components):
    return build(name, MODEL, DEVICE, dtype=DTYPE, patched=variant == "patched", backend=BACKEND,
                 quick=True, components=components)


def _peak_mb(fn) -> float:
    with PeakMemory(DEVICE) as m:
        fn()
    return m.peak_mb


@pytest.mark.parametrize("variant", ["patched", "unpatched"])
@pytest.mark.parametrize("name", ["diff_tracker", "dintr"])
@pytest.mark.parametrize("targets", [1, 4])
def test_update(benchmark, components, name, variant, targets):
    tr = _tracker(name, variant, components)
    frames, boxes = frames_and_boxes(WARMUP + 2, FRAME_HW, targets)
    tr.init_batch(frames[0], boxes)
    for i in range(1, WARMUP + 1):
        tr.update_batch(frames[i])
    frame = frames[WARMUP + 1]
    benchmark.group = f"{name} update ({MODEL}, {targets} target{'s' if targets > 1 else ''})"
    benchmark.extra_info.update(device=str(DEVICE), model=MODEL, variant=variant, targets=targets,
                                dtype=str(DTYPE), peak_mem_mb=_peak_mb(lambda: tr.update_batch(frame)))
    benchmark.pedantic(tr.update_batch, args=(frame,), rounds=ROUNDS, iterations=1)


@pytest.mark.parametrize("variant", ["patched", "unpatched"])
@pytest.mark.parametrize("name", ["diff_tracker", "dintr"])
def test_init(benchmark, components, name, variant):
    tr = _tracker(name, variant, components)
    frames, boxes = frames_and_boxes(1, FRAME_HW, 1)
    steps = getattr(tr, "prompt_steps", getattr(tr, "init_steps", 0))
    benchmark.group = f"{name} init: learning on the first frame ({MODEL})"
    benchmark.extra_info.update(device=str(DEVICE), model=MODEL, variant=variant, steps=steps,
                                dtype=str(DTYPE),
                                peak_mem_mb=_peak_mb(lambda: tr.init_batch(frames[0], boxes)))
    benchmark.pedantic(tr.init_batch, args=(frames[0], boxes), rounds=max(1, ROUNDS // 3), iterations=1)
