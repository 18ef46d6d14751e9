"""`fasttrack bench` and fasttrack/bench: the harness's timing loop and memory method, every
section's cases on the CPU, the report (tables and chart), and the command's --out, --threads,
user errors and failure handling."""
from __future__ import annotations

import importlib
import json
import math
import os
import sys
import types

import pytest
import torch

from fasttrack.bench import harness, report
from fasttrack.bench import ops as bench_ops
from fasttrack.bench.harness import Case, peak_allocated_mb
from fasttrack.cli import main
from fasttrack.commands.common import default_threads

MIB = 2**20
SECTIONS = ("ops", "recorder", "detrack", "dmtrack", "trackers")


def run_cli(capsys, *argv):
    """main(argv) -> (status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------- memory and timing


def test_cpu_peak_allocated_sees_a_known_allocation():
    """64 MiB allocated inside reads 64 MiB; nothing allocated reads ~0; two tensors alive one
    after the other read the larger, not the sum; freeing a tensor made before reads 0."""
    def alloc_64():
        t = torch.ones(64 * MIB // 4)  # float32
        return float(t[0])

    def one_after_the_other():
        a = torch.ones(32 * MIB // 4)
        del a
        b = torch.ones(48 * MIB // 4)
        return float(b[0])

    before = [torch.ones(16 * MIB // 4)]
    assert peak_allocated_mb(alloc_64) == (1.0, pytest.approx(64, abs=0.1))
    out, mb = peak_allocated_mb(lambda: 2 + 2)
    assert out == 4 and mb < 0.01
    assert 48 <= peak_allocated_mb(one_after_the_other)[1] < 48.1
    assert peak_allocated_mb(before.pop)[1] == 0


def test_timing_loop_synchronizes_inside_the_timed_call_and_respects_repeats(monkeypatch):
    events, ticks = [], iter(range(1000))
    monkeypatch.setattr(harness, "_sync", lambda device: events.append("sync"))
    monkeypatch.setattr(harness, "_clock", lambda: (events.append("clock"), next(ticks))[1])
    times = harness.time_ms(lambda: events.append("fn"), "cpu", warmup=2, repeat=3, max_seconds=1e9)
    assert events.count("fn") == 5
    first = events.index("clock")
    assert events[:first] == ["fn", "sync", "fn", "sync", "sync"]  # warm-up, then a drained device
    # each timed call: clock, fn, synchronize, clock: the device's work is inside the readings
    assert events[first:] == ["clock", "fn", "sync", "clock"] * 3
    assert times == [1000.0] * 3  # the fake clock moves 1 s per reading


def test_timing_loop_stops_at_the_time_cap(monkeypatch):
    ticks = iter(range(1000))
    monkeypatch.setattr(harness, "_clock", lambda: next(ticks))  # 1 s per timed call
    assert len(harness.time_ms(lambda: None, warmup=0, repeat=10, max_seconds=2.5)) == 3
    assert len(harness.time_ms(lambda: None, warmup=0, repeat=10, max_seconds=0)) == 1


def test_measure_uses_the_case_repeats_and_a_separate_memory_run():
    calls = []

    def setup():
        return lambda: calls.append(torch.ones(MIB // 4))  # 1 MiB kept per call
    case = Case("s", {"name": "n"}, unit="frame", targets=4, setup=setup, warmup=2, repeat=3, flops=2e9)
    row = harness.measure(case, "cpu")
    assert len(calls) == 2 + 3 + 1 and row["runs"] == 3
    assert row["peak_allocated_mb"] == pytest.approx(1, abs=0.01)
    assert row["target_frames_per_s"] == pytest.approx(4e3 / row["ms"]) and "frames_per_s" not in row
    assert row["gflops"] == 2 and row["tflops"] == pytest.approx(2e9 / (row["ms"] * 1e-3) / 1e12)
    assert harness.measure(case, "cpu", repeat=1, warmup=0)["runs"] == 1  # arguments override


def test_case_errors_are_rows_and_out_of_memory_is_a_result():
    def raising(exc):
        def fn():
            raise exc
        return lambda: fn
    cases = [Case("s", {"impl": "ok"}, setup=lambda: lambda: None, role="reference", group=1),
             Case("s", {"impl": "bad"}, setup=raising(ValueError("refused")), group=1),
             Case("s", {"impl": "big"}, setup=raising(RuntimeError("CUDA out of memory. Tried")), group=1),
             Case("s", {"impl": "absent"}, skip="skipped: not installed", group=1)]
    ok, bad, big, absent = harness.run_cases(cases, "cpu", warmup=0, repeat=1)
    assert ok["ms"] > 0 and "error" not in ok
    assert bad["error"] == "ValueError: refused" and math.isnan(bad["ms"]) and "speedup" not in bad
    assert big["note"].startswith("out of memory: RuntimeError") and "error" not in big
    assert absent["note"] == "skipped: not installed" and "ms" not in absent
    with pytest.raises(ValueError, match="unit"):
        Case("s", {}, unit="step", setup=lambda: None)
    with pytest.raises(ValueError, match="role"):
        Case("s", {}, setup=lambda: None, role="baseline")


# ---------------------------------------------------------------- the sections' cases


@pytest.fixture(scope="module")
def section_rows():
    """Every section's quick CPU cases, each measured once (1 timed call, 1 memory call), at 1
    thread: {section: (cases, rows)}. Sections needing diffusers are left out without it."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for name in SECTIONS:
            try:
                cases = importlib.import_module(f"fasttrack.bench.{name}").cases("cpu", quick=True)
            except ImportError:  # diffusers missing: test_section_cases skips with the reason
                continue
            # the ops headline case at SD-64 (seconds per call) is checked on its case list
            # (test_default_is_small_and_full_is_the_full_matrix), not run here
            cases = [c for c in cases if c.labels.get("shape") != "SD-64"]
            out[name] = (cases, harness.run_cases(cases, "cpu", warmup=0, repeat=1))
    finally:
        torch.set_num_threads(saved)
    return out


UNITS = {"ops": {"call"}, "recorder": {"UNet step"}, "detrack": {"frame", "call", None},
         "dmtrack": {"frame", None},
         "trackers": {"frame", "call"}}


@pytest.mark.parametrize("name", SECTIONS)
def test_section_cases_give_rows_with_unit_and_honest_labels(name, section_rows):
    if name in ("recorder", "trackers"):
        pytest.importorskip("diffusers")
    cases, rows = section_rows[name]
    assert {c.unit for c in cases} == UNITS[name]
    for c, r in zip(cases, rows):
        assert "error" not in r, r
        assert r["section"] == name and r["device"] == "cpu"
        # no RSS, no "fps" of K targets, no other memory labels: one name per measure
        assert not {"fps", "peak_mb", "peak_mem_mb", "init_peak_mem_mb", "ms_per_frame", "tfps_1"} & set(r)
        assert not any("rss" in k for k in r)
        if c.skip:
            assert r["note"] == c.skip and "ms" not in r
            continue
        if c.unit is None:
            continue
        assert r["unit"] == c.unit and r["ms"] > 0 and r["runs"] == 1 and r["peak_allocated_mb"] >= 0
        if c.unit == "frame" and c.targets == 1:
            assert r["frames_per_s"] == pytest.approx(1e3 / r["ms"]) and "target_frames_per_s" not in r
        elif c.unit == "frame":
            assert r["target_frames_per_s"] == pytest.approx(1e3 * c.targets / r["ms"]) and "frames_per_s" not in r
        else:
            assert "frames_per_s" not in r and "target_frames_per_s" not in r
        if c.role != "reference" and any(o.group == c.group and o.role == "reference" and not o.skip
                                         for o in cases):
            assert r["speedup"] > 0 and "mem_ratio" in r, r
    by = {report.row_label(r): r for r in rows}
    if name == "ops":
        # the reference materializes (B, H, N, N) float32 maps: 1 x 2 x 512^2 x 4 B = 2 MiB each
        ref = by["ops / tiny / self_cross / reference / fwd"]
        assert ref["peak_allocated_mb"] >= 2 and ref["gflops"] == pytest.approx(
            bench_ops.flops("self_cross", bench_ops.SHAPES["tiny"]) / 1e9)
    elif name == "recorder":
        fast = by["recorder / SD2.1-top 24x24 / fasttrack"]
        assert fast["rel_err"] < 1e-4  # fasttrack's harmonized map against the eager recorder's
    elif name == "detrack":
        from fasttrack.bench.detrack import count_step_flops

        assert {r["targets"] for r in rows if r.get("unit") == "frame"} == {1, 8, 64}
        assert by["detrack / tiny eager x8"]["gflops"] == count_step_flops("tiny", 8) / 1e9
        flops_row = by["detrack / detrack256 flops (meta device)"]
        assert flops_row["paper_gflops"] == 53.0 and flops_row["gflops"] == count_step_flops() / 1e9
    elif name == "dmtrack":
        from fasttrack.bench.dmtrack import count_step_flops as dm_flops

        timed = [r for r in rows if r.get("samples")]
        assert sorted({r["samples"] for r in timed}) == [1, 5, 10] and len(timed) == 6
        assert by["dmtrack / tiny K=1 / unpatched x1"]["gflops"] == dm_flops("tiny", 1) / 1e9
        # K samplings cost K denoiser passes per step, the ViT once: FLOPs grow, but far less than K-fold
        g = {r["samples"]: r["gflops"] for r in timed if r["role"] == "reference"}
        assert g[1] < g[5] < g[10] < 2 * g[1]
        assert by["dmtrack / tiny w/o diffusion / unpatched x1"]["gflops"] < g[1]
        paper = by["dmtrack / dmtrack256 flops (meta device)"]
        assert paper["gflops"] == dm_flops() / 1e9 and paper["gflops_k5"] == dm_flops("dmtrack256", 5) / 1e9
        assert 0 < paper["diffusion_share_k1"] < paper["diffusion_share_k5"] < 1
    else:
        for r in rows:
            if r["phase"] == "init":
                assert r["unit"] == "call" and r["learning_steps"] > 0
                assert r["ms_per_learning_step"] == pytest.approx(r["ms"] / r["learning_steps"])


WATCH = ("ops_per_frame", "host_reads", "host_writes", "host_ms")


@pytest.mark.parametrize("name", ("trackers", "detrack", "dmtrack"))
def test_update_rows_carry_the_frame_watch(name, section_rows):
    """Every per-frame row that ran (patched and unpatched, every target count) has the frame
    watch's fields: ops > 0, integer host reads and writes >= 0, host ms > 0."""
    if name == "trackers":
        pytest.importorskip("diffusers")
    cases, rows = section_rows[name]
    watched = [(c, r) for c, r in zip(cases, rows) if c.unit == "frame" and not c.skip]
    assert watched
    for c, r in watched:
        assert "watch_error" not in r, r
        assert isinstance(r["ops_per_frame"], int) and r["ops_per_frame"] > 0, r
        for key in ("host_reads", "host_writes"):
            assert isinstance(r[key], int) and not isinstance(r[key], bool) and r[key] >= 0, r
        assert r["host_ms"] > 0
        assert r["host_reads"] >= 1 and r["host_writes"] >= 1  # the frame's upload and its boxes' read
    for c, r in zip(cases, rows):
        if c.unit != "frame" or c.skip:
            assert not set(WATCH) & set(r), r  # init calls, blocks, facts rows: no frame watch
    ran = {(c.role, c.targets) for c, _ in watched}
    want = {"trackers": {(role, k) for role in ("fasttrack", "reference") for k in (1, 4)},
            "detrack": {(role, k) for role in ("fasttrack", "reference") for k in (1, 8, 64)},
            "dmtrack": {("fasttrack", 1), ("reference", 1), ("other", 1)}}[name]
    assert ran == want
    if name == "trackers":
        names = {r["name"] for c, r in watched}
        assert {n.split()[0] for n in names} == {"diff_tracker", "dintr"} and len(names) == 4
    elif name == "dmtrack":
        assert sorted(r["samples"] for c, r in watched if c.role != "other") == [1, 1, 5, 5, 10, 10]


def test_detrack_patched_row_ops_match_a_direct_recount(section_rows):
    """An independent recount: a fresh patched tiny DeTrack, the bench's frames and boxes, the
    updates the row's case made before its watched frame (section_rows: no warm-up, one timed
    call, one memory call), then that frame under a FrameWatch of its own."""
    from fasttrack.bench import detrack as bench_detrack
    from fasttrack.patch import patch
    from fasttrack.trackers.detrack.tracker import DeTrack
    from fasttrack.trackers.watch import FrameWatch

    _, rows = section_rows["detrack"]
    row = {report.row_label(r): r for r in rows}["detrack / tiny patched(torch) x1"]
    height, width = 120, 160
    frames = [bench_detrack._frame(height, width, s) for s in range(4)]
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tr = DeTrack.tiny(seed=0).eval()
        patch(tr, backend="torch")
        tr.init_batch(frames[0], bench_detrack._boxes(1, height, width, 1))
        for frame in frames[1:3]:
            tr.update_batch(frame)
        with FrameWatch() as w:
            tr.update_batch(frames[3])
    finally:
        torch.set_num_threads(saved)
    assert w.ops > 0
    assert (row["ops_per_frame"], row["host_reads"], row["host_writes"]) == (w.ops, w.reads, w.writes)


def test_report_has_every_numeric_column_and_one_chart_panel_per_unit(section_rows, tmp_path):
    from fasttrack.bench.facts import device_facts

    rows = [r for _, rs in section_rows.values() for r in rs]
    result = {"facts": device_facts("cpu"), "rows": rows}
    md, page = report.markdown(result), report.html_page(result)
    assert "rss" not in md.lower() and "fps" not in md.lower()
    for section in section_rows:
        numeric = {k for r in rows if r["section"] == section for k, v in r.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        header = md.split(f"## {section}\n\n", 1)[1].split("\n", 1)[0]
        assert numeric <= set(header.strip("| ").split(" | ")), (section, numeric)
        table = page.split(f"<h2>{section}</h2>", 1)[1].split("</tr>", 1)[0]
        assert all(f"<th>{k}</th>" in table for k in numeric)
    if "detrack" in section_rows:
        assert {"gflops", "frames_per_s", "target_frames_per_s", "peak_allocated_mb"} <= set(
            md.split("## detrack\n\n", 1)[1].split("\n", 1)[0].strip("| ").split(" | "))
    panels = report.panels(rows)
    for title, key, prows in panels:
        if key == "ms":  # one unit per time panel
            assert {r["unit"] for r in prows} == {title.removeprefix("ms per ")}
    pytest.importorskip("matplotlib")
    titles = report.chart(result, tmp_path / "chart.png")
    want = ["ms per call", "ms per UNet step", "ms per frame", "peak allocated MB"]
    assert titles == [t for t in want if "UNet" not in t or "recorder" in section_rows]
    assert (tmp_path / "chart.png").stat().st_size > 10_000


# ---------------------------------------------------------------- default (small) and --full


def _plan(cases):
    """What a case list runs: (id, warmup, repeat, skip) per case."""
    return [(c.id, c.warmup, c.repeat, c.skip) for c in cases]


@pytest.mark.parametrize("name", SECTIONS)
def test_default_is_small_and_full_is_the_full_matrix(name):
    """The case lists themselves (nothing runs): quick=True (the default of `fasttrack bench`)
    is a smaller plan than quick=False (--full) in every section, with what each keeps."""
    if name in ("recorder", "trackers"):
        pytest.importorskip("diffusers")
    mod = importlib.import_module(f"fasttrack.bench.{name}")
    small, full = mod.cases("cpu", quick=True), mod.cases("cpu", quick=False)
    assert _plan(small) != _plan(full)
    if name == "ops":
        shapes = lambda cs: {c.labels["shape"] for c in cs}  # noqa: E731
        assert shapes(small) == {"tiny", "SD-64"} and shapes(full) == {"SD-32", "SD-64"}
        head = [c for c in small if c.labels["shape"] == "SD-64"]
        # the README's headline case (self_cross forward at SD-64) stays in the default, timed once
        assert [(c.labels["op"], c.labels["impl"], c.labels["pass"]) for c in head] == [
            ("self_cross", "reference", "fwd"), ("self_cross", "torch", "fwd"),
            ("self_cross", "torch (lse given)", "fwd")]
        assert all((c.warmup, c.repeat) == (1, 1) for c in head)
        assert all(c.repeat is None for c in full)  # --full: the harness's repeats
        cuda = lambda q: [p[0].name for p in mod.default_plan(torch.device("cuda"), q)]  # noqa: E731
        assert cuda(True) == ["SD-64"] and cuda(False) == ["SD-64", "SD-96", "SD-128"]
    elif name == "recorder":
        assert {c.labels["shape"] for c in small} == {"SD2.1-top 24x24"}
        assert {c.labels["shape"] for c in full} == {"SD2.1-top 48x48"}
    elif name == "detrack":
        compile_ = lambda cs: [c for c in cs if c.labels["name"] == "tiny compile"]  # noqa: E731
        assert [c.skip is not None for c in compile_(small)] == [True]  # torch.compile: --full only
        assert len(compile_(full)) == 3 and not any(c.skip for c in compile_(full))
    elif name == "dmtrack":
        timed = lambda cs: {(c.warmup, c.repeat) for c in cs if c.info.get("samples")}  # noqa: E731
        assert timed(small) == {(None, None)} and timed(full) == {(5, 30)}
    else:
        targets = lambda cs: sorted({c.targets for c in cs})  # noqa: E731
        assert targets(small) == [1, 4] and targets(full) == [1, 4, 8]
        assert {c.repeat for c in small if c.labels["phase"] == "init"} == {2}
        assert {c.repeat for c in full} == {10, 5}


@pytest.fixture
def recording_sections(monkeypatch):
    """SECTIONS replaced by one fake section "rec" of two cases, recording the `quick` it was
    asked for."""
    import fasttrack.commands.bench as cli

    asked = []

    def cases(device, quick):
        asked.append(quick)
        return [Case("rec", {"name": f"case {i}"}, setup=lambda: lambda: torch.ones(8)) for i in range(2)]

    _fake_section(monkeypatch, "_fake_rec", cases)
    monkeypatch.setattr(cli, "SECTIONS", {"rec": ("_fake_rec", "recording")})
    return asked


@pytest.mark.parametrize("argv, quick", [([], True), (["--quick"], True), (["--full"], False)])
def test_bench_runs_small_cases_unless_full(argv, quick, recording_sections, tmp_path, capsys):
    rc, stdout, _ = run_cli(capsys, "bench", "--device", "cpu", "--out", tmp_path, *argv)
    assert rc == 0 and recording_sections == [quick]
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["full"] is (not quick) and result["quick"] is quick
    assert ("full case matrix (--full)" if not quick else "small cases (--full runs the full matrix)") in stdout


def test_bench_full_and_quick_together_is_a_user_error(recording_sections, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--full", "--quick", "--out", str(tmp_path)])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    assert recording_sections == []


def test_bench_shows_a_progress_bar_per_section(recording_sections, tmp_path, capsys):
    """Each section has a tqdm bar on stderr: its name, one step per case, the case running;
    the row lines and tables stay on stdout."""
    rc, stdout, stderr = run_cli(capsys, "bench", "--device", "cpu", "--out", tmp_path)
    assert rc == 0
    assert "[rec]" in stderr and "2/2" in stderr and "case_1" in stderr
    assert "[rec]" in stdout and "2/2" not in stdout and "rec / case 1: " in stdout


# ---------------------------------------------------------------- the command


def _fake_section(monkeypatch, module: str, cases):
    mod = types.ModuleType(module)
    mod.cases = cases
    monkeypatch.setitem(sys.modules, module, mod)


@pytest.fixture
def fake_sections(monkeypatch):
    """SECTIONS of the command replaced by: missing (ModuleNotFoundError), broken (raises),
    ok (one case that records the torch thread count it ran at)."""
    import fasttrack.commands.bench as cli

    seen = []

    def missing(device, quick):
        raise ModuleNotFoundError("No module named 'diffusers'")

    def broken(device, quick):
        raise RuntimeError("kernel failed to compile")

    def ok(device, quick):
        def setup():
            seen.append(torch.get_num_threads())
            return lambda: torch.ones(8)
        return [Case("ok", {"name": "ok row"}, setup=setup)]

    for name, fn in (("missing", missing), ("broken", broken), ("ok", ok)):
        _fake_section(monkeypatch, f"_fake_{name}", fn)
    monkeypatch.setattr(cli, "SECTIONS", {n: (f"_fake_{n}", n) for n in ("missing", "broken", "ok")})
    return seen


def test_bench_skips_missing_dependencies_and_survives_failures(fake_sections, tmp_path, capsys):
    """A section whose optional package is missing becomes a 'skipped' row with the reason; a
    section that raises becomes a 'failed' row and the exit status 1; the sections after either
    still run and the report is written."""
    rc, stdout, stderr = run_cli(capsys, "bench", "--device", "cpu", "--out", tmp_path)
    assert rc == 1 and "broken" in stderr
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    notes = {r["section"]: r.get("note", "") for r in rows}
    assert notes["missing"].startswith("skipped: ModuleNotFoundError") and "diffusers" in notes["missing"]
    assert notes["broken"].startswith("failed: RuntimeError: kernel failed to compile")
    assert [r["name"] for r in rows if r["section"] == "ok"] == ["ok row"]
    assert "skipped: ModuleNotFoundError" in stdout


def test_bench_out_writes_the_four_files_there_and_nothing_here(fake_sections, tmp_path, capsys, monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    files = ["bench.html", "bench.json", "bench.md", "bench.png"]
    pytest.importorskip("matplotlib")
    rc, _, _ = run_cli(capsys, "bench", "--sections", "ok", "--out", tmp_path / "res")
    assert rc == 0 and sorted(os.listdir(tmp_path / "res")) == files and os.listdir(here) == []
    md = (tmp_path / "res" / "bench.md").read_text()
    assert "![bench chart](bench.png)" in md and "| ok row |" in md
    rc, _, _ = run_cli(capsys, "bench", "--sections", "ok")  # default: ./fasttrack-bench/
    assert rc == 0 and os.listdir(here) == ["fasttrack-bench"]
    assert sorted(os.listdir(here / "fasttrack-bench")) == files


def test_bench_threads(fake_sections, tmp_path, capsys, monkeypatch):
    """--threads N sets torch's thread count before any case runs and is in the facts; without
    it, default_threads() (half the CPUs, at most 8)."""
    rc, _, _ = run_cli(capsys, "bench", "--sections", "ok", "--threads", "1", "--out", tmp_path)
    assert rc == 0 and fake_sections == [1] and torch.get_num_threads() == 1
    assert json.loads((tmp_path / "bench.json").read_text())["facts"]["torch_threads"] == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    rc, _, _ = run_cli(capsys, "bench", "--sections", "ok", "--out", tmp_path)
    assert rc == 0 and fake_sections == [1, 3] and default_threads() == 3
    assert json.loads((tmp_path / "bench.json").read_text())["facts"]["torch_threads"] == 3


@pytest.mark.parametrize("argv, needle", [
    (["--threads", "0"], "--threads"),
    (["--sections", "ops,nope"], "--sections: unknown section(s) nope"),
    (["--device", "tpu"], "--device"),
    (["--out", "{file}"], "is a file"),
] + ([] if torch.cuda.is_available() else [(["--device", "cuda"], "no CUDA device")]))
def test_bench_user_errors_are_one_line(argv, needle, tmp_path, capsys):
    (tmp_path / "f.json").write_text("{}")
    rc, _, err = run_cli(capsys, "bench", *[a.format(file=tmp_path / "f.json") for a in argv])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("fasttrack bench: error: ")
    assert needle in lines[0]


def test_bench_ops_uninstalled_peers_are_rows_with_a_reason(monkeypatch):
    """flash-attn / xformers that cannot be imported give a row with a note, not a gap, and a
    case that raises gives a row with its error instead of ending the run."""
    peers = bench_ops._peers(torch.device("cuda"))  # builds lambdas only: no GPU needed
    for name in ("flash-attn", "xformers"):
        assert callable(peers[name]) or peers[name].startswith(f"skipped: {name.replace('-', '_')}")

    def raising(q, k, v):
        raise ValueError("refused")

    monkeypatch.setattr(bench_ops, "_peers", lambda device: {
        "sdpa": raising, "fake": "skipped: fake_attn not importable (ModuleNotFoundError)"})
    plan = [(bench_ops.Shape("t", 1, 1, 16, 8, 3), ("attention",), (False,))]
    rows = harness.run_cases(bench_ops.cases("cpu", plan=plan), "cpu", repeat=1)
    by_impl = {r["impl"]: r for r in rows}
    assert by_impl["fake (no maps)"]["note"].startswith("skipped: fake_attn")
    assert "ms" not in by_impl["fake (no maps)"]
    assert by_impl["sdpa (no maps)"]["error"] == "ValueError: refused"
    assert by_impl["torch"]["ms"] > 0 and by_impl["torch"]["speedup"] > 0
