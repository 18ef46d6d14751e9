"""The ahead-of-time compile report (kernels/compile_report.py) on a representative subset of
the Triton kernels, compiled for sm_90 without a GPU: no compile errors, no register spills,
every 16-bit kernel with dots on wgmma, and what decides speed: the hot loop's SASS (MMA, EX2,
no scalar 16-bit loads), CTAs per SM and waves at the SD shapes. This is the CI guard on kernel
performance between GPU sessions; the full report lives in
benchmarks/results/compile-report-sm90.json.

Compiles run in a subprocess without TRITON_INTERPRET (the interpreter replaces @triton.jit
functions, which then cannot be compiled) with Triton's bundled ptxas and nvdisasm; those
tests skip only where Triton has no ptxas (it cannot compile for the target), and the SASS
parser, occupancy and grid tests need no compile at all.
"""
import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton", reason="triton is not installed")

# One variant family per kernel at the sizes that matter (SD: D=40/64, T=77) plus the widest
# (D=128, T=256) where registers run out first, in both 16-bit dtypes, and fp32 at one size;
# any kernel none of these labels selects gets its first float16 variant (labels change with
# the kernels). "D=64 T=77" float16 is the self x cross forward the SD benchmarks run.
SUBSET = r"""
import json, sys
import torch
from fasttrack.kernels import compile_report as cr
specs = cr.collect(90)
want = {("D=64", "float16"), ("D=40 T=77", "float16"), ("D=128 T=256", "bfloat16"),
        ("D=128", "bfloat16"), ("D=64 T=77 lse given", "float16"), ("D=64 dprobs", "float16"),
        ("D=64 T=77", "float32"), ("D=40 Nk=1", "float16"), ("D=64 T=77", "float16")}
chosen, seen = [], set()
for spec in specs:
    dtype = cr.DTYPE_NAMES[spec.dtype]
    name = spec.kernel.__name__
    box = name.startswith("_box_branch") and dtype == "float16" and (name, dtype) not in seen
    if (spec.label, dtype) in want or box:
        seen.add((name, dtype))
        chosen.append(spec)
covered = {s.kernel.__name__ for s in chosen}
for spec in specs:
    if spec.kernel.__name__ not in covered and spec.dtype == torch.float16:
        covered.add(spec.kernel.__name__)
        chosen.append(spec)
json.dump([cr.compile_spec(spec, 90) for spec in chosen], sys.stdout)
"""


def _env():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    return env


def _run_subset():
    from fasttrack.kernels import compile_report as cr
    if cr._tool("ptxas") is None:
        pytest.skip("triton cannot compile for sm_90 here: no ptxas (triton's nvidia backend)")
    res = subprocess.run([sys.executable, "-c", SUBSET], capture_output=True, text=True,
                         env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def rows():
    return _run_subset()


def _jit_kernels():
    """Names of every @triton.jit *_kernel function of the kernel modules."""
    from fasttrack.kernels import attention, box_branch, cross_attention, self_cross
    return {name for mod in (attention, self_cross, cross_attention, box_branch)
            for name, obj in vars(mod).items()
            if name.endswith("_kernel") and type(obj).__name__ in ("JITFunction", "InterpretedFunction")}


def test_subset_covers_every_kernel(rows):
    from fasttrack.kernels import compile_report as cr
    compiled = {r["kernel"] for r in rows}
    kernels = _jit_kernels()
    assert len(kernels) >= 9 and kernels <= compiled, sorted(kernels - compiled)
    assert any(k.startswith("_box_branch") for k in compiled)
    assert set(rows[0]) == set(cr.KEYS)
    # Every kernel with an SD shape has a launch-grid mirror (compile_report.GRIDS).
    assert {k for k in kernels if not k.startswith("_box_branch")} <= set(cr.GRIDS)


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
               cp_async=False, hot_loop=None, error=None)
    assert cr.problems([row]) and cr.wgmma_problems([row])
    assert cr.problems([dict(row, spill_bytes=0, error="boom")])
    assert not cr.problems([dict(row, spill_bytes=0)])


# nvdisasm -c layout: an outer loop (.L_x_0, 0x0020-0x0150) around an inner one (.L_x_1,
# 0x0040-0x0090), a forward branch, a sibling loop without MMA (.L_x_3) and the trap after
# EXIT (a branch to itself, no loop). The @!PT LDS is a never-executed filler.
SASS = """
        .text._k:
_k:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E.U16 R2, desc[UR4][R4.64] ;
.L_x_0:
        /*0020*/                   LDG.E.U16 R3, desc[UR4][R6.64] ;
        /*0030*/                   LDG.E.128 R8, desc[UR4][R6.64+0x10] ;
.L_x_1:
        /*0040*/                   LDGSTS.E.BYPASS.128 [R10], desc[UR4][R12.64], P0 ;
        /*0050*/                   WARPGROUP.ARRIVE ;
        /*0060*/                   HGMMA.64x64x16.F32 R24, gdesc[UR8], RZ, !UPT ;
        /*0070*/                   MUFU.EX2 R14, R14 ;
        /*0080*/                   ISETP.GE.AND P1, PT, R0, UR5, PT ;
        /*0090*/              @!P1 BRA `(.L_x_1) ;
        /*00a0*/                   HGMMA.64x128x16.F32 R24, gdesc[UR8], R24, gsb0 ;
        /*00b0*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*00c0*/                   FSEL R15, R15, -INF , !P1 ;
        /*00d0*/                   FMNMX R16, R15, R16, !PT ;
        /*00e0*/               @P3 BRA `(.L_x_2) ;
        /*00f0*/                   FFMA R17, R15, R18, R17 ;
        /*0100*/                   MUFU.RCP R19, R19 ;
        /*0110*/              @!PT LDS RZ, [RZ] ;
        /*0120*/                   LDS.128 R20, [R21] ;
        /*0130*/                   STS.U16 [R22], R3 ;
        /*0140*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
.L_x_2:
        /*0150*/               @P2 BRA `(.L_x_0) ;
        /*0160*/                   FADD R1, R1, R2 ;
.L_x_3:
        /*0170*/                   FFMA R5, R5, R6, R7 ;
        /*0180*/                   FFMA R5, R5, R6, R7 ;
        /*0190*/               @P0 BRA `(.L_x_3) ;
        /*01a0*/                   EXIT ;
.L_x_4:
        /*01b0*/                   BRA `(.L_x_4);
"""

# cuobjdump -sass layout: numeric branch targets, encodings in comments; Ampere MMA.
SASS_CUOBJDUMP = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;                     /* 0x00000a0000017a02 */
        /*0010*/                   LDSM.16.M88.4 R8, [R2] ;                   /* 0x000000000208783b */
        /*0020*/                   HMMA.16816.F32 R4, R8, R12, R4 ;           /* 0x0000000c0804723c */
        /*0030*/                   HMMA.16816.F32 R4, R8, R14, R4 ;           /* 0x0000000e0804723c */
        /*0040*/               @P0 BRA 0x10 ;                                 /* 0xffffffc000000947 */
        /*0050*/                   EXIT ;                                     /* 0x000000000000794d */
        /*0060*/                   BRA 0x60;                                  /* 0xfffffff000007947 */
"""


def test_sass_parser_finds_loops_and_counts_the_hot_one():
    from fasttrack.kernels import compile_report as cr
    out = cr.analyze_sass(SASS)
    assert [(lp["start"], lp["end"], lp["instructions"], lp["nested"]) for lp in out["loops"]] == [
        ("0x0020", "0x0150", 19, 1), ("0x0040", "0x0090", 6, 0), ("0x0170", "0x0190", 3, 0)]
    # The outer loop holds both MMAs (64*64*16 + 64*128*16): it is hot, not the inner one.
    assert [lp["mma_work"] for lp in out["loops"]] == [196608, 65536, 0]
    assert [lp["hot"] for lp in out["loops"]] == [True, False, False]
    hot = out["hot_loop"]
    assert (hot["start"], hot["end"], hot["instructions"], hot["nested"]) == ("0x0020", "0x0150", 19, 1)
    assert hot["mma"] == {"HGMMA 64x64x16": 1, "HGMMA 64x128x16": 1}
    assert (hot["hgmma"], hot["hmma"]) == (2, 0)
    assert (hot["mufu_ex2"], hot["mufu_other"]) == (1, 1)
    assert (hot["fp32"], hot["fsel"], hot["isetp"]) == (2, 1, 1)
    assert hot["ldg"] == {"16": 1, "128": 1} and hot["ldgsts"] == {"128": 1} and hot["tma"] == 0
    assert hot["lds"] == {"128": 1} and hot["sts"] == {"16": 1}  # the @!PT LDS is left out
    assert (hot["bar"], hot["sync"]) == (1, 2)  # BAR.SYNC; WARPGROUP.ARRIVE and .DEPBAR
    assert hot["opcodes"]["BRA"] == 3 and "LDS" not in hot["opcodes"]
    assert out["ldg16_kernel"] == 2
    assert out["hot_lines"].splitlines()[0] == ".L_x_0:"
    assert out["hot_lines"].rstrip().endswith("@P2 BRA `(.L_x_0) ;")
    rows = [dict(kernel="k", dtype="float16", config={}, error=None, hot_loop=hot)]
    assert len(cr.scalar_16bit_load_problems(rows)) == 1
    assert cr.scalar_16bit_load_problems([dict(rows[0], hot_loop=dict(hot, ldg={"128": 4}))]) == []

    out = cr.analyze_sass(SASS_CUOBJDUMP)
    assert [(lp["start"], lp["end"]) for lp in out["loops"]] == [("0x0010", "0x0040")]
    hot = out["hot_loop"]
    assert hot["mma"] == {"HMMA 16x8x16": 2} and hot["hmma"] == 2 and hot["instructions"] == 4
    assert hot["ldsm"] == {"16.M88.4": 1}

    # Without MMA: the innermost loop with the most instructions.
    loops = [dict(instructions=50, mma_work=0, nested=1), dict(instructions=10, mma_work=0, nested=0),
             dict(instructions=30, mma_work=0, nested=0)]
    assert cr.hot_loop_index(loops) == 2
    assert cr.analyze_sass("        /*0000*/                   EXIT ;\n")["hot_loop"] is None


def test_occupancy_matches_the_cuda_calculator():
    from fasttrack.kernels import compile_report as cr
    # 174 registers: 5632 per warp, 2 warps per 16K sub-partition, 8 per SM: one 256-thread CTA.
    assert cr.occupancy(90, 174, 8, 0) == (1, "regs")
    assert cr.occupancy(90, 168, 8, 0) == (1, "regs")  # 5376 per warp: 3 per sub-partition
    assert cr.occupancy(90, 128, 8, 80 * 1024) == (2, "regs+smem")  # 2 x 81 KiB of 228
    # 128 x 128 threads: registers allow 4 CTAs, 64 KiB + 1 KiB of shared memory 3 (228 KiB).
    assert cr.occupancy(90, 128, 4, 64 * 1024) == (3, "smem")
    assert cr.occupancy(80, 128, 4, 64 * 1024) == (2, "smem")  # 164 KiB
    assert cr.occupancy(86, 128, 4, 64 * 1024) == (1, "smem")  # 100 KiB
    assert cr.occupancy(90, 255, 4, 0) == (2, "regs")
    assert cr.occupancy(90, 32, 4, 0) == (16, "regs+warps")
    assert cr.occupancy(90, 64, 1, 0) == (32, "regs+ctas")
    assert cr.occupancy(89, 32, 1, 0) == (24, "ctas")
    assert cr.occupancy(86, 32, 8, 0) == (6, "warps")  # 48 warps per SM
    assert cr.occupancy(90, 32, 4, 227 * 1024 + 1) == (0, "smem")  # over the per-CTA maximum


def test_grids_mirror_the_launchers(monkeypatch):
    """compile_report.GRIDS against the grids the launchers pass at SD-64 on a 132-SM sm_90:
    every launch of the attention, cross-attention and self x cross forward and backward is
    recorded (nothing runs) and its program count compared."""
    import math

    import torch

    from fasttrack.kernels import _common, attention, compile_report as cr
    from fasttrack.kernels import cross_attention, self_cross
    mods = (_common, attention, self_cross, cross_attention)
    launches = []

    class Record:
        def __init__(self, kernel):
            self.name = kernel.__name__

        def __getitem__(self, grid):
            def run(*args, **kw):
                launches.append((self.name, tuple(grid), kw))
            return run

    def clear_plans():
        for mod in mods:
            for obj in vars(mod).values():
                if hasattr(obj, "cache_clear"):
                    obj.cache_clear()

    for mod in mods:
        if hasattr(mod, "launch"):
            monkeypatch.setattr(mod, "launch", Record)
        if hasattr(mod, "device_facts"):
            monkeypatch.setattr(mod, "device_facts", lambda dev: (90, 132))
    clear_plans()
    try:
        B, H, N, D = cr.SD_SHAPES["SD-64"]
        T = cr.SD_TOKENS
        q, k, v, dout = (torch.randn(B, H, N, D, dtype=torch.float16) for _ in range(4))
        kt, vt = torch.randn(B, H, T, D, dtype=torch.float16), torch.randn(B, H, T, D, dtype=torch.float16)
        lse = torch.zeros(B, H, N)
        cross, g = torch.randn(B, N, T, dtype=torch.float16), torch.randn(B, N, T, dtype=torch.float16)
        attention.attention_fwd(q, k, v, 0.125)
        attention.attention_bwd(q, k, v, q, lse, dout, None, 0.125)
        cross_attention.cross_attention_fwd(q, kt, vt, 0.125)
        cross_attention.cross_attention_bwd(q, kt, vt, q, lse, dout, torch.randn(B, N, T), 0.125)
        self_cross.self_cross_fwd(q, k, cross, lse, 0.125)
        self_cross.self_cross_bwd(q, k, cross, lse, g, 0.125, False)
    finally:
        clear_plans()
    assert len(launches) >= 9
    names = set()
    for name, grid, kw in launches:
        names.add(name)
        assert name in cr.GRIDS, name
        assert cr.GRIDS[name](dict(kw, T=T), B, H, N, T, 132) == math.prod(grid), (name, grid, kw)
    assert {"_attention_fwd_kernel", "_attention_bwd_kernel", "_self_cross_fwd_kernel",
            "_self_cross_bwd_kernel", "_cross_attention_fwd_kernel"} <= names


def _row(rows, kernel, dtype, variant):
    found = [r for r in rows if r["kernel"] == kernel and r["dtype"] == dtype
             and r["config"].get("variant") == variant]
    assert found, f"{kernel} {dtype} {variant} not compiled"
    return found[0]


def test_attention_fwd_hot_loop_on_sm90(rows):
    from fasttrack.kernels import compile_report as cr
    r = _row(rows, "_attention_fwd_kernel", "float16", "D=64")
    hot = r["hot_loop"]
    assert hot is not None, "no hot loop: nvdisasm / cuobjdump did not disassemble the cubin"
    assert hot["hgmma"] > 0 and all(k.startswith("HGMMA ") for k in hot["mma"])
    assert hot["mufu_ex2"] > 0 and hot["instructions"] > hot["hgmma"]
    assert any(lp["hot"] for lp in r["loops"])
    B, H, N, _ = cr.SD_SHAPES["SD-64"]
    assert r["grid"]["SD-64"] == -(-N // r["config"]["BLOCK_M"]) * B * H
    assert r["ctas_per_sm"] >= 1 and r["occupancy_limit"]
    assert r["waves"]["SD-64"] == round(r["grid"]["SD-64"] / (132 * r["ctas_per_sm"]), 2)
    assert "HGMMA" in r["summary"] and "waves at SD-64" in r["summary"]
    for r in rows:  # every compiled row has its SASS fields; box-branch rows have no waves
        assert r["error"] or (r["loops"] is not None and r["ctas_per_sm"] is not None), r["kernel"]
        assert (r["grid"] is None) == r["kernel"].startswith("_box_branch"), r["kernel"]


def test_self_cross_hot_loop_has_no_scalar_16bit_loads(rows):
    """The self x cross forward at SD's D=64, T=77: C (B, Nq, T) must reach the P C product
    without 16-bit scalar global loads in the query loop."""
    from fasttrack.kernels import compile_report as cr
    r = _row(rows, "_self_cross_fwd_kernel", "float16", "D=64 T=77")
    assert r["hot_loop"] is not None
    assert cr.scalar_16bit_load_problems([r]) == [], r["hot_loop"]["ldg"]


def test_attention_fwd_d64_fp16_fits_two_ctas_per_sm_sm90(rows):
    r = _row(rows, "_attention_fwd_kernel", "float16", "D=64")
    assert r["ctas_per_sm"] >= 2, (r["registers"], r["config"]["num_warps"], r["shared_bytes"],
                                   r["occupancy_limit"])


def test_cli_table_and_sass_dump(tmp_path):
    from fasttrack.kernels import compile_report as cr
    if cr._tool("ptxas") is None:
        pytest.skip("triton cannot compile for sm_90 here: no ptxas (triton's nvidia backend)")
    res = subprocess.run([sys.executable, "-m", "fasttrack.kernels.compile_report", "--arch", "90",
                          "--kernels", "_head_mean_probs", "--dtypes", "float16", "--jobs", "1",
                          "--sass-dump", str(tmp_path / "sass"), "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, env=_env(), timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "CTAs/SM" in res.stdout and "waves 64/96/128" in res.stdout
    rows = json.loads((tmp_path / "r.json").read_text())
    dumps = sorted(os.listdir(tmp_path / "sass"))
    assert len(dumps) == len(rows) >= 1
    text = (tmp_path / "sass" / dumps[0]).read_text()
    assert "<- hot" in text and "HGMMA" in text
