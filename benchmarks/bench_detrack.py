"""pytest-benchmark suite of the DeTrack tracker step and its fused box branch.

    pytest benchmarks/bench_detrack.py --benchmark-json benchmarks/results/detrack-<device>.json

Rows: per-frame latency at batch 1 (eager, torch.compile of the reference network, patched),
throughput of update_batch for 1, 8, 64 targets (extra_info["target_frames_per_s"]), one box
branch block (reference vs fused) and the FLOPs of a DeTrack256 step next to the paper's
53.0 G (extra_info). Each timed call ends with the host copy of the boxes, which synchronizes
the device. CPU: the `tiny` model; GPU: detrack256 and detrack384. torch.compile on CPU takes
minutes on a small machine and runs only with FASTTRACK_BENCH_COMPILE=1.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from fasttrack.patch import patch  # noqa: E402
from fasttrack.trackers import DeTrack  # noqa: E402
from fasttrack.bench.detrack import PAPER_GFLOPS, count_step_flops  # noqa: E402
from fasttrack.trackers.detrack.box_branch import BoxBranch  # noqa: E402
from fasttrack.trackers.detrack.fused import FusedBoxBranch  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
MODELS = ["detrack256", "detrack384"] if DEVICE.type == "cuda" else ["tiny"]
FRAME_HW = (480, 640) if DEVICE.type == "cuda" else (120, 160)
ROUNDS = 20 if DEVICE.type == "cuda" else 5


def _frame(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)


def _boxes(k):
    rng = np.random.default_rng(k)
    H, W = FRAME_HW
    w, h = rng.uniform(0.1, 0.25, k) * W, rng.uniform(0.1, 0.25, k) * H
    return np.stack([rng.uniform(0, W - w), rng.uniform(0, H - h), w, h], 1)


def _tracker(model, variant):
    tr = getattr(DeTrack, model)(seed=0).to(DEVICE).eval()
    if variant == "compile":
        if DEVICE.type == "cpu" and os.environ.get("FASTTRACK_BENCH_COMPILE") != "1":
            pytest.skip("torch.compile on CPU takes minutes; set FASTTRACK_BENCH_COMPILE=1")
        tr.net.predict = torch.compile(tr.net.predict)
    elif variant == "patched":
        patch(tr, backend="auto")
    return tr


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("variant", ["eager", "compile", "patched"])
def test_step_latency(benchmark, model, variant):
    tr = _tracker(model, variant)
    frame = _frame(1)
    tr.init_batch(_frame(0), _boxes(1))
    for _ in range(3):
        tr.update_batch(frame)
    benchmark.group = f"detrack step latency ({model}, batch 1)"
    benchmark.extra_info.update(device=str(DEVICE), model=model, variant=variant)
    benchmark.pedantic(tr.update_batch, args=(frame,), rounds=ROUNDS, iterations=1)
    if DEVICE.type == "cuda":
        benchmark.extra_info["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("variant", ["eager", "patched"])
@pytest.mark.parametrize("targets", [1, 8, 64])
def test_step_throughput(benchmark, model, variant, targets):
    tr = _tracker(model, variant)
    frame = _frame(1)
    tr.init_batch(_frame(0), _boxes(targets))
    tr.update_batch(frame)
    benchmark.group = f"detrack throughput ({model})"
    benchmark.pedantic(tr.update_batch, args=(frame,), rounds=max(2, ROUNDS // 2), iterations=1)
    benchmark.extra_info.update(device=str(DEVICE), model=model, variant=variant, targets=targets,
                                target_frames_per_s=targets / benchmark.stats.stats.mean)


@pytest.mark.parametrize("backend", ["reference", "torch", "triton"])
@pytest.mark.parametrize("targets", [1, 64])
def test_box_branch_block(benchmark, backend, targets):
    if backend == "triton" and DEVICE.type == "cpu":
        pytest.skip("the Triton interpreter is a correctness tool, not a benchmark")
    C, H, ns = (768, 12, 256) if DEVICE.type == "cuda" else (64, 4, 64)
    ref = BoxBranch(C, H).to(DEVICE).eval()
    m = ref if backend == "reference" else FusedBoxBranch.from_reference(ref, backend)
    b = torch.randn(targets, 4, C, device=DEVICE)
    k = torch.randn(targets, H, ns, C // H, device=DEVICE)
    v = torch.randn_like(k)

    def run():
        with torch.no_grad():
            out = m(b, k, v)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        return out

    run()
    benchmark.group = f"box branch block (C={C}, Ns={ns}, targets={targets})"
    benchmark.pedantic(run, rounds=ROUNDS, iterations=5)


def test_flops_detrack256(benchmark):
    flops = benchmark.pedantic(count_step_flops, args=("detrack256",), rounds=1, iterations=1)
    benchmark.extra_info.update(gflops=flops / 1e9, gmacs=flops / 2e9,
                                paper_g=PAPER_GFLOPS["detrack256"])
    assert flops > 0
