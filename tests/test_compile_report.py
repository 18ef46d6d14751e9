"""The ahead-of-time compile report (kernels/compile_report.py) on a representative subset of
the Triton kernels, compiled for sm_90 without a GPU: no compile errors, no register spills,
and every 16-bit kernel with dots on wgmma. This is the CI guard on kernel performance between
GPU sessions; the full report lives in benchmarks/results/compile-report-sm90.json.

Runs in a subprocess without TRITON_INTERPRET (the interpreter replaces @triton.jit functions,
which then cannot be compiled) and needs Triton's bundled ptxas.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="triton is not installed")

# One variant family per kernel at the sizes that matter (SD: D=40/64, T=77) plus the widest
# (D=128, T=256) where registers run out first, in both 16-bit dtypes, and fp32 at one size.
SUBSET = r"""
import json, sys
import torch
from fasttrack.kernels import compile_report as cr
specs = cr.collect(90)
want = {("D=64", "float16"), ("D=40 T=77", "float16"), ("D=128 T=256", "bfloat16"),
        ("D=128", "bfloat16"), ("D=64 T=77 lse given", "float16"), ("D=64 dprobs", "float16"),
        ("D=64 T=77", "float32"), ("D=40 Nk=1", "float16")}
rows, seen = [], set()
for spec in specs:
    dtype = cr.DTYPE_NAMES[spec.dtype]
    name = spec.kernel.__name__
    box = name.startswith("_box_branch") and dtype == "float16" and (name, dtype) not in seen
    if (spec.label, dtype) in want or box:
        seen.add((name, dtype))
        rows.append(cr.compile_spec(spec, 90))
json.dump(rows, sys.stdout)
"""


def _run_subset():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    res = subprocess.run([sys.executable, "-c", SUBSET], capture_output=True, text=True,
                         env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def rows():
    return _run_subset()


def test_subset_covers_every_kernel(rows):
    from fasttrack.kernels import compile_report as cr
    import fasttrack.kernels  # noqa: F401  (kernel modules importable without the interpreter)
    compiled = {r["kernel"] for r in rows}
    kernels = {"_attention_fwd_kernel", "_attention_bwd_preprocess_kernel",
               "_attention_bwd_dq_kernel", "_attention_bwd_dkdv_kernel",
               "_self_cross_fwd_kernel", "_self_cross_bwd_dq_kernel",
               "_self_cross_bwd_dk_kernel", "_head_mean_probs_kernel",
               "_cross_attention_fwd_kernel"}
    assert kernels <= compiled, sorted(kernels - compiled)
    assert any(k.startswith("_box_branch") for k in compiled)
    assert set(rows[0]) == set(cr.KEYS)


def test_no_errors_no_spills(rows):
    from fasttrack.kernels import compile_report as cr
    assert cr.problems(rows) == []
    for r in rows:
        assert isinstance(r["registers"], int) and 0 < r["registers"] <= 255, r
        assert r["shared_bytes"] >= 0


def test_16bit_dots_on_wgmma(rows):
    from fasttrack.kernels import compile_report as cr
    assert cr.wgmma_problems(rows) == []
    assert any(r["mma"] == "wgmma" for r in rows)
    fp32 = [r for r in rows if r["dtype"] == "float32" and r["uses_dot"]]
    # fp32 dots are exact IEEE products: FMA units, never tensor cores.
    assert fp32 and all(r["mma"] == "fma" for r in fp32)


def test_report_flags_a_spilling_kernel():
    """problems() must see spills and errors, or the checks above could never fail."""
    from fasttrack.kernels import compile_report as cr
    row = dict(kernel="k", dtype="float16", config={"num_warps": 4, "num_stages": 2},
               registers=255, spill_bytes=64, shared_bytes=0, mma="mma.sync", uses_dot=True,
               cp_async=False, error=None)
    assert cr.problems([row]) and cr.wgmma_problems([row])
    assert cr.problems([dict(row, spill_bytes=0, error="boom")])
    assert not cr.problems([dict(row, spill_bytes=0)])
