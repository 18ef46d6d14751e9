"""pytest-benchmark suite of `fasttrack bench`'s "detrack" section (fasttrack/bench/detrack.py):
the DeTrack step per frame for 1, 8, 64 targets (eager, torch.compile, patched), its box branch
block, and the FLOP count of DeTrack256 next to the paper's. benchmarks/conftest.py runs the
cases."""
from fasttrack.bench import detrack as SECTION  # noqa: N812


def test_detrack(case, run_case):
    run_case(case)
