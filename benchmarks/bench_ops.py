"""pytest-benchmark suite for the attention-map ops: eager reference vs each backend, plus SDPA
without maps (the floor) and flash-attn / xformers when importable.

    pytest benchmarks/bench_ops.py --benchmark-columns=median,ops   # CPU: tiny + SD-32
    # on a GPU the SD-64 / SD-96 / SD-128 shapes run too, in float16

extra_info of every case: shape, op, impl, pass, tflops, peak_mb, device, dtype.
"""
import pytest
import torch

from fasttrack.bench import ops as bench_ops
from fasttrack.bench.harness import PeakMemory

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
DTYPE = torch.float16 if CUDA else torch.float32
SHAPES = ["SD-64", "SD-96", "SD-128"] if CUDA else ["tiny", "SD-32"]


def _sync():
    if CUDA:
        torch.cuda.synchronize()


def _params():
    for name in SHAPES:
        s = bench_ops.SHAPES[name]
        for bwd in (False, True):
            for op, impl, _ in bench_ops._cases(s, DEVICE, DTYPE, bwd):
                yield pytest.param(name, op, impl, bwd, id=f"{name}-{op}-{impl}-{'fwdbwd' if bwd else 'fwd'}")


@pytest.mark.parametrize("shape,op,impl,bwd", list(_params()))
def test_bench(benchmark, shape, op, impl, bwd):
    s = bench_ops.SHAPES[shape]
    fn = next(f for o, i, f in bench_ops._cases(s, DEVICE, DTYPE, bwd) if (o, i) == (op, impl))

    def timed():
        fn()
        _sync()

    timed()  # warm-up (Triton compile, allocator growth)
    with PeakMemory(DEVICE) as m:
        timed()
    benchmark.pedantic(timed, rounds=10 if CUDA else 3, iterations=1)
    med = benchmark.stats.stats.median if benchmark.stats else float("nan")
    benchmark.extra_info.update(
        shape=shape, op=op, impl=impl, **{"pass": "fwd+bwd" if bwd else "fwd"}, device=str(DEVICE),
        dtype=str(DTYPE), peak_mb=m.peak_mb, tflops=bench_ops.flops(op, s, bwd) / med / 1e12)
