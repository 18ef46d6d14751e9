"""pytest-benchmark suite of `fasttrack bench`'s "dmtrack" section (fasttrack/bench/dmtrack.py):
the DMTrack step per frame against K = 1, 5, 10 mask samplings, patched and unpatched, and the
step without the diffusion module. benchmarks/conftest.py runs the cases."""
from fasttrack.bench import dmtrack as SECTION  # noqa: N812


def test_dmtrack(case, run_case):
    run_case(case)
