"""pytest-benchmark suite of `fasttrack bench`'s "trackers" section (fasttrack/bench/trackers.py):
Diff-Tracker and DINTR per frame and per init, patched vs unpatched. benchmarks/conftest.py runs
the cases."""
import pytest

pytest.importorskip("diffusers")
from fasttrack.bench import trackers as SECTION  # noqa: E402,N812


def test_trackers(case, run_case):
    run_case(case)
