"""Bench section "host": host cost per op call beside SDPA, Triton launches stubbed.

The numbers themselves are measurements (fasttrack bench --sections host; the goal lives
there, not in a timed test); these tests check what the section measures: every op and backend,
both passes, SDPA measured beside each, the Triton rows never launching a kernel, and the
interpreter switch restored afterwards."""
import json
import os

import pytest
import torch

from fasttrack.bench import host
from fasttrack.bench.harness import run_cases
from cli_helpers import run_cli


@pytest.fixture
def quick_host(monkeypatch):
    """Two batches of two calls: the plumbing, not the numbers."""
    monkeypatch.setattr(host, "CALLS", 2)
    monkeypatch.setattr(host, "ROUNDS", 2)


def test_rows_cover_every_op_backend_and_pass(quick_host, monkeypatch):
    pytest.importorskip("triton")
    import fasttrack.kernels as K

    # A launched kernel would fail the row: the Triton rows must stub every launch.
    def no_run(*a, **kw):
        raise AssertionError("a Triton kernel ran inside the host section")
    for mod in (K.attention, K.self_cross, K.cross_attention):
        for name in dir(mod):
            if name.startswith("_") and name.endswith("_kernel"):
                monkeypatch.setattr(getattr(mod, name), "run", no_run)
    before = os.environ.get("TRITON_INTERPRET")
    cases = host.cases("cpu")
    rows = run_cases(cases, "cpu")
    assert os.environ.get("TRITON_INTERPRET") == before
    got = {(r["op"], r["impl"], r["pass"]): r for r in rows}
    for op in ("attention", "cross_attention", "self_cross", "self_cross(lse)"):
        for impl in ("auto", "torch", "triton") + (("aten",) if op == "attention" else ()):
            for pass_ in ("fwd", "fwd+bwd"):
                r = got.pop((op, impl, pass_))
                assert "error" not in r, r
                assert r["us_per_call"] > 0 and r["sdpa_us"] > 0
                assert r["x_sdpa"] > 0
                assert r["launch"] == ("stubbed" if impl == "triton" else "run")
    assert not got


def test_side_by_side_measures_both_and_interleaves(quick_host):
    """The yardstick and the op alternate (ROUNDS batches each), and the stub is only around
    the op's batches."""
    import fasttrack.kernels._common as common

    order = []
    host.side_by_side(lambda: order.append(("op", common._STUB is not None)),
                      lambda: order.append(("sdpa", common._STUB is not None)), torch.device("cpu"), True)
    calls = host.CALLS
    timed = order[3 * calls + calls:]  # after the warm-up batches
    assert timed == ([("op", True)] * calls + [("sdpa", False)] * calls) * host.ROUNDS


def test_side_by_side_ratio_is_the_median_of_adjacent_batches(monkeypatch):
    """x_sdpa pairs each op batch with the SDPA batch right after it: a machine whose speed
    changes mid-run (here for the last third of the rounds, where the Python-heavy op is slower
    and SDPA faster) gives the two minima in different phases; their ratio (4.0) mixes them,
    the median of the paired ratios does not."""
    monkeypatch.setattr(host, "CALLS", 2)
    monkeypatch.setattr(host, "ROUNDS", rounds := 9)
    other = rounds // 3
    op = [2.0] * 3 + [2.0] * (rounds - other) + [3.0] * other
    yard = [1.0] + [1.0] * (rounds - other) + [0.5] * other
    durations = op[:3] + yard[:1] + [d for pair in zip(op[3:], yard[1:]) for d in pair]
    clock = iter(t for i, d in enumerate(durations) for t in (i, i + d * host.CALLS * 1e-6))
    monkeypatch.setattr(host.time, "perf_counter", lambda: next(clock))
    r = host.side_by_side(lambda: None, lambda: None, torch.device("cpu"), False)
    assert r["us_per_call"] == pytest.approx(2.0) and r["sdpa_us"] == pytest.approx(0.5)
    assert r["x_sdpa"] == pytest.approx(2.0)


def test_bench_command_runs_the_host_section(quick_host, tmp_path, capsys):
    pytest.importorskip("triton")
    rc, out, err = run_cli(capsys, "bench", "--sections", "host", "--out", tmp_path)
    assert rc == 0, err
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert {r["section"] for r in rows} == {"host"} and len(rows) == 26
    assert "x SDPA" in out and "x_sdpa" in out
