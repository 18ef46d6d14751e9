"""scripts/gpu_check.sh and its helpers scripts/gpu_check_report.py, scripts/gpu_lab.py and
scripts/apply_sweep.py, as far as a machine without a GPU can check them: the syntax, the dry
runs, the fast refusal without a GPU, argument errors, the summary built from a steps table and a
junit file, and the lab's plumbing under the Triton interpreter (--smoke)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEPS = ["environment", "install", "info", "pytest-gpu", "pytest-triton", "sanitize", "bench-ops",
         "compile-report", "lab", "bench-rest"]
LAB = ROOT / "scripts" / "gpu_lab.py"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils timeout")


def sh(*args, env=None, timeout=60):
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env)


def test_syntax():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_dry_run_lists_every_step(tmp_path):
    res = sh(tmp_path / "out", "--dry-run")
    assert res.returncode == 0, res.stderr
    lines = [line.split()[1] for line in res.stdout.splitlines() if line[:2].isdigit()]
    assert lines == STEPS
    assert "pip install --no-build-isolation --no-deps" in res.stdout
    assert "-m gpu" in res.stdout and "--junitxml" in res.stdout
    assert "compile_report --arch" in res.stdout and "sanitize.sh" in res.stdout
    lab = next(line for line in res.stdout.splitlines() if line[3:].startswith("lab "))
    assert "timeout  480s" in lab and "scripts/gpu_lab.py --out" in lab and "GPU_CHECK_STEP_LIMIT" in lab


def test_dry_run_subset(tmp_path):
    res = sh(tmp_path, "--dry-run", "--steps", "pytest-gpu,sanitize")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("(not selected)") == len(STEPS) - 2


@pytest.mark.parametrize("args", [[], ["out", "--steps", "nonsense"], ["out", "--bogus"], ["a", "b"]])
def test_bad_arguments_exit_2(args, tmp_path):
    res = sh(*[tmp_path / a if a in ("out", "a", "b") else a for a in args])
    assert res.returncode == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_stops_at_once_with_status_2(tmp_path):
    res = sh(tmp_path / "out", timeout=120)
    assert res.returncode == 2
    assert "no usable CUDA GPU" in res.stderr and "sees no CUDA device" in res.stderr
    assert not (tmp_path / "out" / "steps.tsv").exists()  # no step ran


def _report():
    spec = importlib.util.spec_from_file_location("gpu_check_report", ROOT / "scripts" / "gpu_check_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_summary_from_steps_and_junit(tmp_path):
    (tmp_path / "steps.tsv").write_text(
        "step\tstatus\tseconds\tlog\n"
        f"install\tok\t95\t{tmp_path}/02-install.log\n"
        f"pytest-gpu\tFAILED (exit 1)\t120\t{tmp_path}/04-pytest-gpu.log\n"
        "bench-rest\tskipped (time budget)\t0\t-\n")
    (tmp_path / "pytest-gpu.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_ops_gpu" name="test_forward_rule[triton-float16-1x2]"/>'
        '<testcase classname="tests.test_ops_gpu" name="test_forward_rule[triton-bfloat16-1x2]">'
        '<failure message="x"/></testcase>'
        '<testcase classname="tests.test_ops_gpu" name="test_forward_rule[cuda-float16-1x2]"/>'
        '<testcase classname="tests.test_ops_gpu" name="test_cross_attention_paths[two-kernel-Nk77-D40-float16]"/>'
        '<testcase classname="tests.test_ops_gpu" name="test_box_branch[3-37-768-12-float16]">'
        '<skipped message="s"/></testcase>'
        '</testsuite></testsuites>')
    rep = _report()
    assert rep.main(["summary", str(tmp_path), "--budget", "540", "--elapsed", "300"]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert "| install | ok | 95 | 02-install.log |" in text
    assert "| bench-rest | skipped (time budget) | 0 | - |" in text
    assert "| test_ops_gpu::test_forward_rule[triton] | 1 | 1 | 0 | FAILED |" in text
    assert "| test_ops_gpu::test_forward_rule[cuda] | 1 | 0 | 0 | ok |" in text
    assert "| test_ops_gpu::test_cross_attention_paths[two-kernel] | 1 | 0 | 0 | ok |" in text
    assert "| test_ops_gpu::test_box_branch | 0 | 0 | 1 | not run |" in text
    assert "- test_ops_gpu::test_forward_rule[triton-bfloat16-1x2]" in text


def test_environment_record_without_a_gpu(tmp_path):
    out = tmp_path / "environment.json"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check_report.py"), "env", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    import json
    env = json.loads(out.read_text())
    for key in ("python", "torch", "triton", "nvcc", "driver", "git_commit", "cuda_available"):
        assert key in env
    assert env["torch"] == torch.__version__


# ------------------------------------------------------------------ scripts/gpu_lab.py
def lab(*args, timeout=120, env=None):
    return subprocess.run([sys.executable, str(LAB), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env=env)


def _module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lab_dry_run_names_every_section_shape_and_kernel():
    res = lab("--dry-run")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for section in ("ops", "sweep", "ncu", "trackers", "shared"):
        assert f"== section {section}" in out
    for shape in ("SD-64: (B, H, N, D) = (2, 5, 4096, 64)", "SD-96: (B, H, N, D) = (2, 5, 9216, 64)",
                  "SD-128: (B, H, N, D) = (1, 10, 16384, 64)"):
        assert shape in out
    assert "T = 77" in out and "float16, bfloat16" in out and "fwd, fwd+bwd" in out
    for impl in ("sdpa", "aten flash (+lse)", "flex compiled (+lse)", "eager softmax + head mean",
                 "fasttrack triton (lse given)"):
        assert impl in out
    # the sweep's variants come from aot_specs(90): one line per variant, default config first
    for kernel in ("_attention_fwd_kernel", "_self_cross_fwd_kernel", "_head_mean_probs_kernel"):
        assert kernel + " float16" in out and kernel + " bfloat16" in out
    assert "(default); M128 N128 w8 s2" in out
    assert "SpeedOfLight, Occupancy, WarpStateStats" in out
    # section trackers: the four trackers, patched and unpatched, DeTrack at 1 and 64 targets
    for variant in ("DMTrack x1", "DeTrack x1", "DeTrack x64", "DiffTracker x1", "DINTR x1"):
        for impl in ("patched", "unpatched"):
            assert f"  {variant} {impl}: " in out
    assert "SD 2.1 architecture, random weights, float16, 480x640 frames" in out
    assert "detrack256" in out and "dmtrack256" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_lab_without_a_gpu_exits_2_with_one_line(tmp_path):
    res = lab("--out", tmp_path / "lab")
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "no CUDA GPU" in res.stderr and "--dry-run or --smoke" in res.stderr
    assert not (tmp_path / "lab").exists()


def test_lab_bad_section_exits_2():
    assert lab("--dry-run", "--sections", "ops,nonsense").returncode == 2


def test_lab_smoke_writes_every_section(tmp_path):
    """--smoke: every section under TRITON_INTERPRET=1 on a tiny CPU shape: rows, skip reasons,
    a sweep whose non-default config was checked against the default one."""
    out = tmp_path / "lab"
    # no ncu on the PATH: its skip reason shows; one torch thread: the tiny trackers in seconds
    env = dict(os.environ, PATH="/usr/bin:/bin", OMP_NUM_THREADS="1")
    res = lab("--smoke", "--out", out, "--shared-lab", tmp_path / "missing.py", timeout=420, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "lab.json").read_text())
    for key in ("device_name", "capability", "torch", "triton", "torch_cuda", "git_commit"):
        assert key in summary["env"]
    assert summary["env"]["smoke"] is True and set(summary["sections"]) == {"ops", "sweep", "ncu", "trackers", "shared"}

    ops = json.loads((out / "ops.json").read_text())
    assert {r["op"] for r in ops} == {"attention", "self_cross", "cross_attention"}
    assert {r["pass"] for r in ops} == {"fwd", "fwd+bwd"}
    ours = [r for r in ops if r["impl"].startswith("fasttrack")]
    assert len(ours) == 8 and all(r["wall_ms"] > 0 and "error" not in r for r in ours), ours
    assert all("x_sdpa" in r for r in ours)
    assert any(r["impl"].startswith("flex") and "skipped" in r for r in ops)

    sweep = json.loads((out / "sweep.json").read_text())
    checked = [r for r in sweep["rows"] if not r.get("default") and "max_rel_diff" in r]
    assert checked and any(r["correct"] for r in checked)
    assert all(r["correct"] == (r["max_rel_diff"] <= 2e-2) for r in checked)
    assert {b["kernel"] for b in sweep["best"]} >= {"_attention_fwd_kernel", "_self_cross_fwd_kernel"}

    (ncu,) = json.loads((out / "ncu.json").read_text())
    assert "ncu" in ncu["skipped"]
    (shared,) = json.loads((out / "shared.json").read_text())
    assert "no such file" in shared["skipped"]

    # section trackers: the four tiny trackers, patched and unpatched, DeTrack at 1 and 64 targets
    trackers = json.loads((out / "trackers.json").read_text())
    assert sorted((r["tracker"], r["targets"], r["impl"]) for r in trackers) == sorted(
        (t, k, impl) for t, k in (("DMTrack", 1), ("DeTrack", 1), ("DeTrack", 64), ("DiffTracker", 1), ("DINTR", 1))
        for impl in ("patched", "unpatched"))
    for r in trackers:
        assert "error" not in r and "skipped" not in r, r
        assert r["model"] == "tiny" and r["frames_per_s"] > 0 and r["host_op_ms_per_frame"] > 0
        assert isinstance(r["ops_per_frame"], int) and r["ops_per_frame"] > 0
        assert isinstance(r["host_reads"], int) and r["host_reads"] >= 1
        assert isinstance(r["host_writes"], int) and r["host_writes"] >= 1
        assert r["device_ms_per_frame"] is None and r["launches_per_frame"] is None  # no CUDA here
        assert 0 < len(r["top_ops"]) <= 10 and all(o["self_cpu_ms"] >= 0 for o in r["top_ops"])
        assert (out / r["table"]).is_file()
        assert (out / r["trace"]).stat().st_size > 0 and r["trace"].endswith(".json.gz")
    assert all("target_frames_per_s" in r for r in trackers if r["targets"] == 64)


def test_lab_sweep_records_a_changed_kernel_as_an_error_row(tmp_path, monkeypatch):
    """A spec whose signature no longer names every kernel argument (the kernel changed) is an
    error row; the sweep goes on to the next variant."""
    gl = _module("gpu_lab")
    gl.import_fasttrack()
    from dataclasses import replace

    real = gl.sweep_variants(r"^_attention_fwd_kernel$", smoke=True)[0]
    broken = replace(real, signature={k: v for k, v in real.signature.items() if k != "Nk"})
    monkeypatch.setattr(gl, "sweep_variants", lambda regex, smoke: [broken, real])
    monkeypatch.setattr(gl, "SMOKE_SWEEP_CONFIGS", ())
    result = gl.run_sweep(tmp_path, deadline=float("inf"), smoke=True, device=torch.device("cpu"),
                          kernels_regex=None)
    rows = result["rows"]
    assert "argument 'Nk'" in rows[0]["error"]
    assert rows[1]["correct"] and rows[1]["default"]
    assert json.loads((tmp_path / "sweep.json").read_text())["rows"][0]["error"] == rows[0]["error"]


def test_lab_trackers_one_failure_does_not_stop_the_others_and_the_budget_skips(tmp_path, monkeypatch):
    """A tracker variant that raises is an error row, the next variants still run; with the
    section's time spent every variant is a skipped row with the reason."""
    gl = _module("gpu_lab")
    ran = []

    def variant(v, out, device, smoke, components):
        ran.append((v["tracker"], v["targets"], v["patched"]))
        if v["tracker"] == "DMTrack":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return {"frames_per_s": 1.0}

    monkeypatch.setattr(gl, "run_tracker_variant", variant)
    rows = gl.run_trackers(tmp_path, deadline=float("inf"), smoke=True, device=torch.device("cpu"))
    assert len(ran) == len(rows) == 10
    bad = [r for r in rows if "error" in r]
    assert [r["tracker"] for r in bad] == ["DMTrack", "DMTrack"] and "illegal memory access" in bad[0]["error"]
    assert all(r["frames_per_s"] == 1.0 for r in rows if r["tracker"] != "DMTrack")
    assert json.loads((tmp_path / "trackers.json").read_text()) == json.loads(json.dumps(rows))
    ran.clear()
    rows = gl.run_trackers(tmp_path, deadline=0.0, smoke=True, device=torch.device("cpu"))
    assert ran == [] and all(r["skipped"].startswith("budget: section trackers out of time") for r in rows)


def test_lab_budget_shares_and_skips():
    gl = _module("gpu_lab")
    b = gl.Budget(100.0)
    d = b.section_deadline("ops", ["sweep", "ncu"])
    share = (d - b.start) / 100.0
    assert abs(share - gl.WEIGHTS["ops"] / (gl.WEIGHTS["ops"] + gl.WEIGHTS["sweep"] + gl.WEIGHTS["ncu"])) < 0.01
    assert gl.out_of_time(b.start, 1.0) and not gl.out_of_time(d, 1.0)


def test_apply_sweep_proposes_the_config_fastest_over_all_shapes(tmp_path, capsys):
    ap = _module("apply_sweep")
    cfg = lambda m, n, w, s: {"BLOCK_M": m, "BLOCK_N": n, "num_warps": w, "num_stages": s}  # noqa: E731
    head = {"kernel": "_attention_fwd_kernel", "dtype": "float16", "variant": "D=64 HAS_V=True"}
    rows = [dict(head, shape="SD-64", config=cfg(128, 64, 4, 3), default=True, correct=True, ms=1.0),
            dict(head, shape="SD-128", config=cfg(128, 64, 4, 3), default=True, correct=True, ms=10.0),
            dict(head, shape="SD-64", config=cfg(128, 128, 8, 2), default=False, correct=True, ms=0.8),
            dict(head, shape="SD-128", config=cfg(128, 128, 8, 2), default=False, correct=True, ms=8.0),
            # fastest at SD-64 but wrong at SD-128: never proposed
            dict(head, shape="SD-64", config=cfg(64, 64, 4, 3), default=False, correct=True, ms=0.5),
            dict(head, shape="SD-128", config=cfg(64, 64, 4, 3), default=False, correct=False, max_rel_diff=1.0)]
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"rows": rows, "best": []}))
    assert ap.main([str(path), "--json", str(tmp_path / "p.json")]) == 0
    (p,) = json.loads((tmp_path / "p.json").read_text())
    assert p["config"] == cfg(128, 128, 8, 2) and p["function"] == "attention_config" and p["kind"] == "fwd"
    assert p["speedup_over_default"] == {"SD-128": 1.25, "SD-64": 1.25}
    line = capsys.readouterr().out
    assert 'attention_config(d_pad=64, dtype=torch.float16, kind="fwd", arch=90) -> Config(128, 128, 8, 2)' in line
    assert "# was Config(128, 64, 4, 3)" in line
