"""pytest-benchmark suite for attention-map recording on a diffusers UNet step: the unrecorded
patched UNet (the floor), fasttrack.AttentionRecorder, and an eager Prompt-to-Prompt-style
recorder (full maps, dense resizing), as in fasttrack.bench.recorder.

    pytest benchmarks/bench_recorder.py --benchmark-columns=median,ops
    # CUDA: the SD 2.1 UNet shape at 64 x 64 latents, fp16; CPU: SD 2.1's top two levels at 24 x 24

extra_info of every case: shape, impl, peak_mb (allocated tensor memory above the start),
device, dtype.
"""
import functools

import pytest
import torch

pytest.importorskip("diffusers")
from fasttrack.bench import recorder as bench_recorder  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")


@functools.lru_cache(maxsize=1)
def _steps():
    # One model for the three cases (the SD 2.1 shape takes a while to build).
    return bench_recorder.make_steps(DEVICE, quick=True)


@pytest.mark.parametrize("impl", ["unrecorded", "fasttrack", "eager"])
def test_bench_recorder(benchmark, impl):
    shape, steps = _steps()
    fn = steps[impl]

    def timed():
        out = fn()
        if CUDA:
            torch.cuda.synchronize()
        return out

    try:
        _, peak = bench_recorder.allocated_peak_mb(timed, DEVICE)  # also the warm-up
    except torch.cuda.OutOfMemoryError as e:  # the eager baseline at SD 2.1 / 64 x 64
        pytest.skip(f"{impl} ran out of memory: {str(e).splitlines()[0]}")
    benchmark.pedantic(timed, rounds=10 if CUDA else 2, iterations=1)
    benchmark.extra_info.update(shape=shape, impl=impl, peak_mb=peak, device=str(DEVICE),
                                dtype="float16" if CUDA else "float32")
