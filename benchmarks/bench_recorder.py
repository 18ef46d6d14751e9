"""pytest-benchmark suite of `fasttrack bench`'s "recorder" section (fasttrack/bench/recorder.py):
a diffusers UNet step unrecorded, with the eager recorder and with fasttrack.AttentionRecorder.
benchmarks/conftest.py runs the cases."""
import pytest

pytest.importorskip("diffusers")
from fasttrack.bench import recorder as SECTION  # noqa: E402,N812


def test_recorder(case, run_case):
    run_case(case)
