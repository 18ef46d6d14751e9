"""The pytest-benchmark suites: one test per case of a `fasttrack bench` section.

Each benchmarks/bench_<section>.py names its section module (SECTION) and has one test taking
`case` and `run_case`; this file parametrizes `case` over SECTION.cases(device, quick) and
measures it with fasttrack.bench.harness.measure, timed by pytest-benchmark (on the harness's
synchronized callable) instead of the harness's own loop. extra_info holds the case's row (peak
allocated MB, FLOPs, frames/s ...). CUDA when present, else CPU; the small cases (quick=True,
as `fasttrack bench`) unless --bench-full (as `fasttrack bench --full`). Under
--benchmark-disable every case runs once: a smoke test of the cases.

    python -m pytest benchmarks --benchmark-disable -q
    python -m pytest benchmarks/bench_ops.py --bench-full --benchmark-json ops.json
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pytest_addoption(parser):
    parser.addoption("--bench-full", action="store_true",
                     help="the sections' full case lists, as `fasttrack bench --full` (default: the small "
                          "cases, as `fasttrack bench`)")


def pytest_configure(config):
    from fasttrack.commands.common import set_threads

    set_threads(None)  # as `fasttrack bench` without --threads


def pytest_collect_file(file_path, parent):
    """Collect bench_*.py (pytest's default python_files is test_*.py); a file named on the
    command line is collected by pytest itself."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") \
            and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = metafunc.module.SECTION.cases(DEVICE, quick=not metafunc.config.getoption("--bench-full"))
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture
def run_case(benchmark):
    """run_case(case): skip a case that cannot run here, else measure it (timings by
    pytest-benchmark) and put its row in extra_info; an exception fails the test."""
    from fasttrack.bench.harness import measure, synced

    def timer(fn, device, *, warmup, repeat, max_seconds):
        benchmark.pedantic(synced(fn, device), rounds=repeat, warmup_rounds=warmup, iterations=1)
        return [t * 1e3 for t in benchmark.stats.stats.data] if benchmark.stats else []

    def run(case):
        if case.skip:
            pytest.skip(case.skip)
        # A group per comparison (the reference and its alternatives side by side)
        group = case.group if isinstance(case.group, tuple) else (case.group or case.id,)
        benchmark.group = " / ".join(str(v) for v in (case.section, *group))
        if case.setup is None:  # an untimed row of facts: time the computation of its fields
            row = benchmark.pedantic(measure, args=(case, DEVICE), rounds=1, iterations=1)
        else:
            try:
                row = measure(case, DEVICE, timer=timer, catch=False)
            except torch.cuda.OutOfMemoryError as e:  # the materializing reference on a GPU
                pytest.skip(f"out of memory: {str(e).splitlines()[0]}")
        benchmark.extra_info.update({k: v for k, v in row.items() if k != "section"})
        return row
    return run
