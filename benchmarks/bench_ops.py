"""pytest-benchmark suite of `fasttrack bench`'s "ops" section (fasttrack/bench/ops.py): the
attention-map ops, eager reference vs fasttrack's backends, SDPA (and flash-attn / xformers on a
GPU) without maps. benchmarks/conftest.py runs the cases."""
from fasttrack.bench import ops as SECTION  # noqa: N812


def test_ops(case, run_case):
    run_case(case)
