"""Helpers of scripts/gpu_check.sh: the environment record and the closing summary.

    python scripts/gpu_check_report.py env OUTDIR/environment.json
    python scripts/gpu_check_report.py summary OUTDIR [--budget S] [--elapsed S]

`env` needs only torch (fasttrack may not be installed yet): device name, capability, driver,
torch / CUDA / triton / python / nvcc versions, the git commit, and which optional packages
(pybind11, cupy, flash-attn, xformers, diffusers) import. `summary` reads OUTDIR/steps.tsv
(written by gpu_check.sh) and the junit files pytest-*.xml, prints a table of the steps and the
tests grouped by test function (and by backend or path where the test id names one), and
writes the same as OUTDIR/summary.md. Standard library only, besides torch for `env`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*cmd: str) -> str | None:
    """stdout of cmd, stripped; None when it cannot run or fails."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # missing, or installed but broken (a wheel for another torch)
        return f"not importable ({type(e).__name__})"
    return str(getattr(mod, "__version__", "installed"))


def environment() -> dict:
    import torch

    env: dict = {
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device_name=p.name, capability=f"{p.major}.{p.minor}",
                   sm_count=p.multi_processor_count, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   device_count=torch.cuda.device_count())
    smi = _run("nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader")
    env["nvidia_smi"] = smi
    env["driver"] = smi.splitlines()[0].split(",")[1].strip() if smi else None
    nvcc = _run(os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"), "--version") \
        or _run("nvcc", "--version")
    env["nvcc"] = nvcc.splitlines()[-1] if nvcc else None
    for name, module in (("triton", "triton"), ("pybind11", "pybind11"), ("cupy", "cupy"),
                         ("flash_attn", "flash_attn"), ("xformers", "xformers"),
                         ("diffusers", "diffusers"), ("pytest", "pytest"), ("numpy", "numpy")):
        env[name] = _version(module)
    env["git_commit"] = _run("git", "rev-parse", "HEAD")
    status = _run("git", "status", "--porcelain", "--untracked-files=no")
    env["git_dirty"] = None if status is None else bool(status)
    env["compute_sanitizer"] = _run("bash", "-c", "command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer")
    return env


def read_steps(outdir: Path) -> list[dict]:
    path = outdir / "steps.tsv"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    keys = lines[0].split("\t")
    return [dict(zip(keys, line.split("\t"))) for line in lines[1:] if line.strip()]


# First token of a test id that names a backend or a code path worth its own line.
_GROUP_TOKENS = ("torch", "triton", "cuda", "fused", "two")


def junit_results(path: Path) -> list[tuple[str, str, str]]:
    """(test function, test id, outcome) for every testcase of a junit file; outcome is
    passed, failed, error or skipped."""
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "?")
        module = case.get("classname", "").split(".")[-1]
        if case.find("failure") is not None:
            outcome = "failed"
        elif case.find("error") is not None:
            outcome = "error"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        func = name.split("[", 1)[0]
        m = re.match(r"[^\[]*\[([^-\]]+)", name)
        group = f"{module}::{func}"
        if m and m.group(1) in _GROUP_TOKENS:
            group += f"[{m.group(1)}{'-kernel' if m.group(1) == 'two' else ''}]"
        out.append((group, f"{module}::{name}", outcome))
    return out


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def summary(outdir: Path, budget: int | None, elapsed: int | None) -> str:
    lines = ["# gpu_check summary", ""]
    env_path = outdir / "environment.json"
    if env_path.exists():
        env = json.loads(env_path.read_text())
        lines.append(f"{env.get('device_name', '?')} (sm {env.get('capability', '?')}), driver "
                     f"{env.get('driver')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
                     f"triton {env.get('triton')}, python {env.get('python')}, nvcc: {env.get('nvcc')}, "
                     f"commit {str(env.get('git_commit'))[:12]}{' (dirty)' if env.get('git_dirty') else ''}")
        lines.append("")
    if elapsed is not None:
        lines += [f"Total {elapsed} s" + (f" of a {budget} s budget" if budget else ""), ""]
    steps = read_steps(outdir)
    lines += _table(["step", "status", "seconds", "log"],
                    [[s["step"], s["status"], s["seconds"], os.path.basename(s["log"]) if s["log"] != "-" else "-"]
                     for s in steps])
    for xml in sorted(outdir.glob("pytest-*.xml")):
        try:
            results = junit_results(xml)
        except ET.ParseError as e:
            lines += ["", f"## {xml.name}: unreadable ({e})"]
            continue
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for group, _, outcome in results:
            counts[group][outcome] += 1
        lines += ["", f"## {xml.name}: tests by function (and backend / path)", ""]
        rows = [[g, c["passed"], c["failed"] + c["error"], c["skipped"],
                 "ok" if c["failed"] + c["error"] == 0 and c["passed"] else
                 ("FAILED" if c["failed"] + c["error"] else "not run")]
                for g, c in counts.items()]
        lines += _table(["tests", "passed", "failed", "skipped", ""], rows)
        bad = [tid for _, tid, outcome in results if outcome in ("failed", "error")]
        if bad:
            lines += ["", "Failed:", ""] + [f"- {tid}" for tid in bad]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("env")
    e.add_argument("path")
    s = sub.add_parser("summary")
    s.add_argument("outdir")
    s.add_argument("--budget", type=int, default=None)
    s.add_argument("--elapsed", type=int, default=None)
    args = p.parse_args(argv)
    if args.cmd == "env":
        env = environment()
        Path(args.path).write_text(json.dumps(env, indent=1) + "\n")
        for k, v in env.items():
            print(f"{k:20s} {v}")
        return 0
    text = summary(Path(args.outdir), args.budget, args.elapsed)
    (Path(args.outdir) / "summary.md").write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
