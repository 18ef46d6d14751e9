"""scripts/gpu_check.sh and its helper scripts/gpu_check_report.py, as far as a machine without a
GPU can check them: the syntax, the dry run, the fast refusal without a GPU, argument errors,
and the summary built from a steps table and a junit file."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEPS = ["environment", "install", "info", "pytest-gpu", "pytest-triton", "sanitize", "bench-ops",
         "compile-report", "bench-rest"]

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
