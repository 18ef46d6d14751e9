"""Ahead-of-time compile report: the project's performance instrument without a GPU.

Compiles every Triton kernel variant the launchers can select for one GPU architecture with
``triton.compile`` and a ``GPUTarget`` (no device needed: Triton ships ptxas and nvdisasm), and
reads from the result what decides a kernel's speed before it ever runs:

- registers per thread and spill bytes (ptxas ``-v``: "Used N registers", "N bytes spill
  stores"; cuobjdump's REG / LOCAL when the log is not available);
- shared memory per program (Triton's metadata: pipelining buffers and layout conversions);
- the matrix instruction every ``tl.dot`` lowered to: "wgmma" (Hopper warpgroup MMA, async,
  operands from shared memory), "mma.sync" (Ampere-style warp MMA; on sm_90 it runs at roughly
  half of wgmma's rate), or "fma" (no tensor core: fp32 "ieee" dots, broadcast-sums);
- whether global loads became cp.async (asynchronous copies that software pipelining needs);
- the hot loop of the SASS and what one iteration issues, occupancy (CTAs per SM) and the
  number of waves at the project's benchmark shapes (below). "0 spills, all wgmma" alone said
  nothing about kernels that ran 2-9x slower than FlashAttention on an H200: per-tile mask
  selects, scalar 16-bit loads and one CTA per SM did.

The variants come from each kernel module's ``aot_specs(arch)`` (kernels/_common.KernelSpec),
built from the same config functions the launchers call, so the report compiles what a GPU run
would. Pointers are compiled as 16-byte aligned, as torch allocations are.

    python -m fasttrack.kernels.compile_report --arch 90 --json report.json
    python -m fasttrack.kernels.compile_report --arch 80 --kernels self_cross --dtypes float16
    python -m fasttrack.kernels.compile_report --arch 90 --kernels _attention_fwd --sass-dump sass/

**Hot loop** (``hot_loop``, ``loops``). The cubin is disassembled (nvdisasm -c, else
cuobjdump -sass; both ship with Triton). A loop is a backward branch: a ``BRA`` (any predicate
or modifier) at address b to a label or address a <= b; its body is the instruction range
[a, b]. A branch to itself (the trap after EXIT) is no loop; back edges to one header merge
into one loop ending at the last of them. The *hot loop* is the loop with the most tensor-core
work (the sum of m*n*k over the HGMMA / HMMA instructions in its range, nested loops included)
and, among loops with equal work, the smallest: with nested loops that is the innermost loop
holding every in-loop MMA (for the self x cross forward the query-block loop, whose nested head
loop holds the Q K^T products and whose own body the P C product and the loads of C). Without
MMA in any loop it is the innermost loop with the most instructions. Counts are static: each
instruction of the range once, a nested loop's body once although it runs many times.
Instructions predicated ``@!PT`` (never executed: ptxas's scheduling fillers) are left out.
``hot_loop`` holds, per iteration:

  start, end      addresses of the first and the branching instruction ("0x0be0")
  instructions    instructions in the range; nested: loops nested inside it
  mma             {"HGMMA 64x128x16": n, "HMMA 16x8x16": n}: matrix instructions by shape
                  (the opcode suffix); hgmma, hmma: their totals
  mufu_ex2        MUFU.EX2 (one per softmax probability); mufu_other: MUFU.RCP / LG2 / ...
  fp32            FP32-pipe arithmetic: FFMA, FMUL, FADD, FMNMX (and their 2-wide / 32I forms)
  fsel, fsetp     float selects (masking with -inf / 0) and float compares
  isetp           integer compares (ISETP: mask bounds); int_select: SEL, IMNMX
  convert         F2FP / F2F / I2F / F2I (casts, e.g. P to fp16 for the second dot)
  shfl            warp shuffles (row reductions)
  ldg             global loads by width in bits {"16": n, "128": n}: 16 means scalar 16-bit
                  loads (LDG.E.U16), 4 bytes per instruction where 128-bit ones move 16
  ldgsts          cp.async (LDGSTS) by width; tma: UTMALDG / UBLKCP (Hopper bulk copies)
  stg             global stores by width
  lds, sts        shared loads / stores by width; ldsm: LDSM by its shape suffix
  bar             BAR.* (CTA barriers); sync: other waits and fences (DEPBAR, LDGDEPBAR,
                  WARPGROUP.ARRIVE / DEPBAR, SYNCS.*, MEMBAR, FENCE, WARPSYNC)
  opcodes         every opcode with its modifiers and its count, so new ones show up
                  (uniform-datapath U* instructions count only here and in instructions)

``loops`` lists every loop as {start, end, instructions, mma_work, nested, hot}.
``ldg16_kernel``: scalar 16-bit global loads (LDG 16-bit) in the whole kernel.

**Occupancy** (``ctas_per_sm``, ``occupancy_limit``), as the CUDA occupancy calculator
(cuda_occupancy.h) computes it for one kernel on an idle SM. Registers: a warp gets
ceil(32 * registers / 256) * 256 of them, each of the 4 sub-partitions holds 16K, so an SM
holds 4 * floor(16384 / per-warp) warps. Warps: 64 per SM on sm_80 / sm_90, 48 on sm_86 / 89.
Shared memory: Triton's per-CTA bytes plus 1 KiB the driver reserves, rounded up to 128 B,
against 228 KiB per SM on sm_90 (227 KiB at most per CTA), 164 KiB on sm_80 (163), 100 KiB on
sm_86 / 89 (99). CTAs: at most 32 per SM on sm_80 / 90, 16 on sm_86, 24 on sm_89.
``ctas_per_sm`` is the smallest of the four and ``occupancy_limit`` names the resources that
give it ("regs", "smem", "warps", "ctas", joined by "+" on a tie; 0 CTAs: it does not fit).

**Waves** (``grid``, ``waves``). Programs launched at the benchmark shapes SD-64 / SD-96 /
SD-128 = (B, H, N, D) = (2, 5, 4096, 64), (2, 5, 9216, 64), (1, 10, 16384, 64) with T = 77 text
tokens (a variant's own T where it is compiled for one), self-attention (Nq = Nk = N) or text
cross attention (Nk = T), from `GRIDS`, which mirrors the launchers; waves = programs /
(SMs x ctas_per_sm) on 132 SMs (sm_90, H100 / H200) or 108 (sm_80, A100); sm_86 / 89 have no
default SM count (``--sms``). None for kernels without an SD shape (the box branch). A grid of
1.1 waves runs as 2.

``summary``: one line, e.g. "HGMMA 64x128x16 x4 + 64x64x16 x8, 474 instr/iter, 2 CTAs/SM
(regs), 1.94 waves at SD-64".

JSON: a list of objects with the keys in KEYS: kernel, dtype, config, registers, spill_bytes,
shared_bytes, mma, uses_dot, cp_async, hot_loop, loops, ldg16_kernel, ctas_per_sm,
occupancy_limit, grid, waves, summary, error. Exit status 1 when any variant failed to compile.
Checks: `problems` (errors, spills), `wgmma_problems` (sm_90 16-bit dots off wgmma),
`scalar_16bit_load_problems` (16-bit scalar global loads in a hot loop).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

import torch

from ._common import KernelSpec

ARCHS = (80, 86, 89, 90)
KEYS = ("kernel", "dtype", "config", "registers", "spill_bytes", "shared_bytes", "mma",
        "uses_dot", "cp_async", "hot_loop", "loops", "ldg16_kernel", "ctas_per_sm",
        "occupancy_limit", "grid", "waves", "summary", "error")
DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}


def collect(arch: int) -> list[KernelSpec]:
    """Every variant the launchers select on compute capability `arch` (e.g. 90 for H100)."""
    from . import attention, box_branch, cross_attention, self_cross
    specs: list[KernelSpec] = []
    for mod in (attention, self_cross, cross_attention, box_branch):
        specs.extend(mod.aot_specs(arch))
    return specs


def _tool(name: str) -> str | None:
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.path.exists(path) else shutil.which(name)


def _resource_usage(cubin: bytes) -> dict[str, int]:
    """REG / LOCAL / SHARED of the cubin's kernel, from cuobjdump --dump-resource-usage."""
    tool = _tool("cuobjdump")
    if tool is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True,
                             text=True, check=False).stdout
    return {k: int(v) for k, v in re.findall(r"\b(REG|LOCAL|SHARED|STACK):(\d+)", out)}


def _mma(ptx: str, uses_dot: bool) -> str | None:
    if "wgmma" in ptx:
        return "wgmma"
    if "mma.sync" in ptx:
        return "mma.sync"
    return "fma" if uses_dot else None


# ---------------------------------------------------------------------------------------------
# SASS: disassembly, loops, the hot loop's instruction mix
# ---------------------------------------------------------------------------------------------

# "/*0c30*/  @!P2 BRA `(.L_x_1) ;" (nvdisasm) or "/*0c30*/  @!P2 BRA 0xbe0 ;  /* 0x... */"
# (cuobjdump -sass): address, optional predicate, opcode with its modifiers, operands.
_INSN = re.compile(r"^\s*/\*([0-9a-fA-F]+)\*/\s+(?:\{\s*)?(@!?U?P(?:T|\d+)\s+)?"
                   r"([A-Z][A-Z0-9_]*(?:\.[A-Za-z0-9_]+)*)([^;]*);")
_LABEL = re.compile(r"^\s*(\.?[A-Za-z_$][\w.$]*):\s*$")
_LABEL_TARGET = re.compile(r"`\(([^)]+)\)")
_HEX_TARGET = re.compile(r"0x([0-9a-fA-F]+)")
_GMMA_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")
# Warp-level MMA shape suffixes (m, n, k): HMMA.16816 is m16n8k16.
_WARP_MMA_SHAPES = {"16816": (16, 8, 16), "1688": (16, 8, 8), "16832": (16, 8, 32),
                    "884": (8, 8, 4), "8816": (8, 8, 16), "8832": (8, 8, 32)}
_WARPGROUP_MMA = ("HGMMA", "QGMMA", "IGMMA", "BGMMA")
_WARP_MMA = ("HMMA", "IMMA", "DMMA", "BMMA")
_FP32 = {"FFMA", "FMUL", "FADD", "FMNMX", "FFMA2", "FMUL2", "FADD2", "FMNMX2", "FFMA32I",
         "FMUL32I", "FADD32I"}
_CONVERT = {"F2FP", "F2F", "I2F", "F2I", "I2FP", "F2IP"}
_SYNC = {"DEPBAR", "LDGDEPBAR", "WARPSYNC", "MEMBAR", "FENCE", "ERRBAR", "CCTL"}


class Insn(NamedTuple):
    """One SASS instruction; `line` is its line index in the disassembly."""
    addr: int
    pred: str  # "@P0", "@!PT", ... or ""
    op: str    # opcode with its modifiers: "LDG.E.U16", "HGMMA.64x128x16.F32"
    operands: str
    line: int


def parse_sass(text: str) -> tuple[list[Insn], dict[str, int]]:
    """(instructions in address order, label -> address) of nvdisasm or cuobjdump SASS."""
    insns, labels, pending = [], {}, []
    for i, line in enumerate(text.splitlines()):
        m = _INSN.match(line)
        if m:
            addr = int(m.group(1), 16)
            for name in pending:
                labels[name] = addr
            pending = []
            insns.append(Insn(addr, (m.group(2) or "").strip(), m.group(3), m.group(4).strip(), i))
            continue
        m = _LABEL.match(line)
        if m:
            pending.append(m.group(1))
    return insns, labels


def _branch_target(insn: Insn, labels: dict[str, int]) -> int | None:
    m = _LABEL_TARGET.search(insn.operands)
    if m:
        return labels.get(m.group(1))
    hexes = _HEX_TARGET.findall(insn.operands)
    return int(hexes[-1], 16) if hexes else None


def _mma_shape(op: str) -> tuple[str, tuple[int, int, int] | None] | None:
    """("HGMMA", (64, 128, 16)) for "HGMMA.64x128x16.F32", ("HMMA", (16, 8, 16)) for
    "HMMA.16816.F32"; None for other opcodes."""
    parts = op.split(".")
    if parts[0] in _WARPGROUP_MMA:
        for p in parts[1:]:
            m = _GMMA_SHAPE.match(p)
            if m:
                return parts[0], tuple(int(x) for x in m.groups())
        return parts[0], None
    if parts[0] in _WARP_MMA:
        return parts[0], (_WARP_MMA_SHAPES.get(parts[1]) if len(parts) > 1 else None)
    return None


def _work(insns: list[Insn]) -> int:
    """Tensor-core work of a range: sum of m*n*k over its MMA instructions (1 if no shape)."""
    total = 0
    for ins in insns:
        mma = _mma_shape(ins.op)
        if mma is not None and ins.pred != "@!PT":
            total += mma[1][0] * mma[1][1] * mma[1][2] if mma[1] else 1
    return total


def _width(mods: list[str]) -> str:
    """Access width in bits from a load / store's modifiers: U16 / S16 / 16 -> "16", 64,
    128, U8 / S8 -> "8", none of them -> "32" (LDG.E)."""
    for m in mods:
        if m in ("U8", "S8", "8"):
            return "8"
        if m in ("U16", "S16", "16"):
            return "16"
        if m in ("64", "128", "256"):
            return m
    return "32"


def sass_counts(insns: list[Insn]) -> dict:
    """The instruction mix of a range of SASS (the hot_loop fields of the module docstring,
    without start / end / nested)."""
    c: dict = dict(instructions=0, mma={}, hgmma=0, hmma=0, mufu_ex2=0, mufu_other=0, fp32=0,
                   fsel=0, fsetp=0, isetp=0, int_select=0, convert=0, shfl=0, ldg={}, ldgsts={},
                   tma=0, stg={}, lds={}, sts={}, ldsm={}, bar=0, sync=0, opcodes={})

    def bump(d, k):
        d[k] = d.get(k, 0) + 1

    for ins in insns:
        if ins.pred == "@!PT":  # never executed
            continue
        op = ins.op
        parts = op.split(".")
        base, mods = parts[0], parts[1:]
        c["instructions"] += 1
        bump(c["opcodes"], op)
        mma = _mma_shape(op)
        if mma is not None:
            kind, shape = mma
            bump(c["mma"], f"{kind} " + ("x".join(map(str, shape)) if shape else ".".join(mods)))
            if kind == "HGMMA":
                c["hgmma"] += 1
            elif kind == "HMMA":
                c["hmma"] += 1
        elif base == "MUFU":
            c["mufu_ex2" if mods[:1] == ["EX2"] else "mufu_other"] += 1
        elif base in _FP32:
            c["fp32"] += 1
        elif base == "FSEL":
            c["fsel"] += 1
        elif base in ("FSETP", "FSET"):
            c["fsetp"] += 1
        elif base in ("ISETP", "ICMP"):
            c["isetp"] += 1
        elif base in ("SEL", "IMNMX", "VIMNMX"):
            c["int_select"] += 1
        elif base in _CONVERT:
            c["convert"] += 1
        elif base == "SHFL":
            c["shfl"] += 1
        elif base == "LDG":
            bump(c["ldg"], _width(mods))
        elif base == "LDGSTS":
            bump(c["ldgsts"], _width(mods))
        elif base in ("UTMALDG", "UBLKCP"):
            c["tma"] += 1
        elif base == "STG":
            bump(c["stg"], _width(mods))
        elif base == "LDS":
            bump(c["lds"], _width(mods))
        elif base == "STS":
            bump(c["sts"], _width(mods))
        elif base == "LDSM":
            bump(c["ldsm"], ".".join(mods))
        elif base == "BAR":
            c["bar"] += 1
        elif base in _SYNC or base == "SYNCS" or (base == "WARPGROUP" and mods):
            c["sync"] += 1
    return c


def find_loops(insns: list[Insn], labels: dict[str, int]) -> list[dict]:
    """Every loop (backward branch) as {start, end, instructions, mma_work, nested} with start
    and end indices into `insns` (first instruction and the branch), in address order."""
    index = {ins.addr: i for i, ins in enumerate(insns)}
    heads: dict[int, int] = {}
    for i, ins in enumerate(insns):
        if ins.op.split(".")[0] != "BRA" or ins.pred == "@!PT":
            continue
        target = _branch_target(ins, labels)
        j = index.get(target) if target is not None else None
        if j is None or j >= i:  # forward branch, or the trap's branch to itself
            continue
        heads[j] = max(i, heads.get(j, i))
    loops = [dict(start=j, end=i) for j, i in sorted(heads.items())]
    for lp in loops:
        body = insns[lp["start"]:lp["end"] + 1]
        lp["instructions"] = sum(1 for ins in body if ins.pred != "@!PT")
        lp["mma_work"] = _work(body)
        lp["nested"] = sum(1 for o in loops if o is not lp and lp["start"] <= o["start"]
                           and o["end"] <= lp["end"])
    return loops


def hot_loop_index(loops: list[dict]) -> int | None:
    """Index into `loops` of the hot loop (the rule in the module docstring)."""
    if not loops:
        return None
    if any(lp["mma_work"] for lp in loops):
        return min(range(len(loops)), key=lambda i: (-loops[i]["mma_work"],
                                                     loops[i]["instructions"]))
    innermost = [i for i, lp in enumerate(loops) if lp["nested"] == 0]
    return max(innermost, key=lambda i: loops[i]["instructions"])


def analyze_sass(text: str) -> dict:
    """{hot_loop, loops, ldg16_kernel, hot_lines} of one kernel's SASS text: the report's
    SASS fields (module docstring) plus the hot loop's lines of `text` (for --sass-dump)."""
    insns, labels = parse_sass(text)
    loops = find_loops(insns, labels)
    hot = hot_loop_index(loops)
    whole = sass_counts(insns)
    out = dict(hot_loop=None, loops=[], ldg16_kernel=whole["ldg"].get("16", 0), hot_lines=None)
    for i, lp in enumerate(loops):
        out["loops"].append(dict(start=f"0x{insns[lp['start']].addr:04x}",
                                 end=f"0x{insns[lp['end']].addr:04x}",
                                 instructions=lp["instructions"], mma_work=lp["mma_work"],
                                 nested=lp["nested"], hot=i == hot))
    if hot is not None:
        lp = loops[hot]
        out["hot_loop"] = dict(start=out["loops"][hot]["start"], end=out["loops"][hot]["end"],
                               nested=lp["nested"],
                               **sass_counts(insns[lp["start"]:lp["end"] + 1]))
        lines = text.splitlines()
        first = insns[lp["start"]].line
        while first > 0 and _LABEL.match(lines[first - 1]):
            first -= 1
        out["hot_lines"] = "\n".join(lines[first:insns[lp["end"]].line + 1])
    return out


def disassemble(cubin: bytes) -> str | None:
    """SASS text of a cubin: nvdisasm -c (labels for branch targets), else cuobjdump -sass;
    None when neither tool runs."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        for name, args in (("nvdisasm", ["-c"]), ("cuobjdump", ["-sass"])):
            tool = _tool(name)
            if tool is None:
                continue
            res = subprocess.run([tool, *args, f.name], capture_output=True, text=True,
                                 check=False)
            if res.returncode == 0 and "/*" in res.stdout:
                return res.stdout
    return None


# ---------------------------------------------------------------------------------------------
# Occupancy and waves
# ---------------------------------------------------------------------------------------------

# Per-SM limits by compute capability (CUDA occupancy calculator, cuda_occupancy.h; CUDA C
# Programming Guide, "Technical Specifications per Compute Capability").
SM_LIMITS = {
    80: dict(max_warps=64, max_ctas=32, smem_sm=164 * 1024, smem_cta=163 * 1024),
    86: dict(max_warps=48, max_ctas=16, smem_sm=100 * 1024, smem_cta=99 * 1024),
    89: dict(max_warps=48, max_ctas=24, smem_sm=100 * 1024, smem_cta=99 * 1024),
    90: dict(max_warps=64, max_ctas=32, smem_sm=228 * 1024, smem_cta=227 * 1024),
}
REGS_PER_SM = 65536
REG_GRANULE = 256        # registers allocated per warp in units of 256
SUB_PARTITIONS = 4       # register file split in 4 (16K each); a warp lives in one
SMEM_RESERVED = 1024     # per CTA, reserved by the driver on sm_80+
SMEM_GRANULE = 128
SM_COUNTS = {80: 108, 90: 132}  # A100; H100 / H200 SXM
SD_SHAPES = {"SD-64": (2, 5, 4096, 64), "SD-96": (2, 5, 9216, 64), "SD-128": (1, 10, 16384, 64)}
SD_TOKENS = 77


def occupancy(arch: int, registers: int, num_warps: int, shared_bytes: int) -> tuple[int, str]:
    """(CTAs per SM, limiting resources) of a kernel alone on an SM of compute capability
    `arch` (the model in the module docstring)."""
    lim = SM_LIMITS[arch]
    per_warp = -(-registers * 32 // REG_GRANULE) * REG_GRANULE
    by = {}
    if registers > 255 or per_warp * num_warps > REGS_PER_SM:
        by["regs"] = 0
    else:
        warps = SUB_PARTITIONS * ((REGS_PER_SM // SUB_PARTITIONS) // per_warp) if per_warp else 10 ** 6
        by["regs"] = warps // num_warps
    smem = -(-(shared_bytes + SMEM_RESERVED) // SMEM_GRANULE) * SMEM_GRANULE
    by["smem"] = 0 if shared_bytes > lim["smem_cta"] else lim["smem_sm"] // smem
    by["warps"] = lim["max_warps"] // num_warps
    by["ctas"] = lim["max_ctas"]
    n = min(by.values())
    return n, "+".join(k for k, v in by.items() if v == n)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _query_splits(n_programs: int, m_blocks: int, sms: int) -> int:
    """The launchers' query_splits (programs sharing one output tile), wherever it lives."""
    try:
        from ._common import query_splits
    except ImportError:
        from .self_cross import query_splits
    n_split = query_splits(n_programs, m_blocks, sms)
    return _cdiv(m_blocks, _cdiv(m_blocks, n_split))  # as the launchers: no empty splits


def _attention_keys(cx, N, T):
    # The backward with a probability gradient (HAS_EXTRA) serves cross attention: Nk = T.
    return T if cx.get("HAS_EXTRA") else N


def _attention_bwd_programs(cx, B, H, N, T, sms):
    n_blocks = _cdiv(_attention_keys(cx, N, T), cx["BLOCK_N"])
    return n_blocks * B * H * _query_splits(n_blocks * B * H, _cdiv(N, cx["BLOCK_M"]), sms)


def _self_cross_fwd_programs(cx, B, H, N, T, sms):
    n_programs = _cdiv(N, cx["BLOCK_N"]) * _cdiv(T, cx["BLOCK_T"]) * B
    return n_programs * _query_splits(n_programs, _cdiv(N, cx["BLOCK_M"]), sms)


def _heads(cx):
    return 2 if cx["PAIR"] else 1


# Programs a launcher starts for a variant (its constexprs or launch keywords cx) at (B, H, N)
# with T text tokens on `sms` SMs: self attention Nq = Nk = N, cross attention (the head-mean
# probabilities, the backward with dprobs) Nq = N, Nk = T. THIS MIRRORS THE LAUNCHERS
# (attention.fwd_plan / _bwd_launch, self_cross._fwd_plan / self_cross_bwd,
# cross_attention._fwd_plan): change it with them (kernels/_common.KernelSpec has no grid
# field yet). tests/test_compile_report.py checks it against the grids the launchers pass.
GRIDS = {
    "_attention_fwd_kernel": lambda cx, B, H, N, T, sms: _cdiv(N, cx["BLOCK_M"]) * B * H,
    "_attention_bwd_preprocess_kernel":
        lambda cx, B, H, N, T, sms: _cdiv(N, cx["BLOCK_M"]) * B * H,
    "_attention_bwd_kernel": _attention_bwd_programs,
    "_self_cross_fwd_kernel": _self_cross_fwd_programs,
    "_self_cross_bwd_preprocess_kernel": lambda cx, B, H, N, T, sms: _cdiv(N, cx["BLOCK_M"]) * B,
    "_self_cross_bwd_kernel":
        lambda cx, B, H, N, T, sms: _cdiv(N, cx["BLOCK_N"]) * B * _cdiv(H, _heads(cx)),
    "_cross_attention_fwd_kernel": lambda cx, B, H, N, T, sms: _cdiv(N, cx["BLOCK_M"]) * B,
    "_head_mean_probs_kernel":
        lambda cx, B, H, N, T, sms: _cdiv(N, cx["BLOCK_M"]) * _cdiv(T, cx["BLOCK_N"]) * B,
}


def grid_programs(spec: KernelSpec, shape: tuple[int, int, int, int], sms: int) -> int | None:
    """Programs the launcher starts for `spec` at SD shape (B, H, N, D) on `sms` SMs; None for
    kernels outside GRIDS (box branch) or when the mirror fails (a renamed constexpr)."""
    fn = GRIDS.get(spec.kernel.__name__)
    if fn is None:
        return None
    B, H, N, _ = shape
    try:
        return int(fn(spec.constexprs, B, H, N, spec.constexprs.get("T", SD_TOKENS), sms))
    except (KeyError, ImportError, TypeError):
        return None


def _shapes_desc(d: dict) -> str:
    return " + ".join(f"{k.split()[1] if ' ' in k else k} x{v}" for k, v in d.items())


def summary(row: dict) -> str:
    """The row in one line: MMA per iteration, hot-loop size, occupancy, waves at SD-64."""
    if row["error"]:
        return "compile error"
    hot = row["hot_loop"]
    parts = []
    if hot is None:
        parts.append("no loop")
    else:
        kinds = sorted({k.split()[0] for k in hot["mma"]})
        parts.append(" ".join(kinds) + " " + _shapes_desc(hot["mma"]) if hot["mma"] else "no MMA")
        parts.append(f"{hot['instructions']} instr/iter")
    if row["ctas_per_sm"] is not None:
        parts.append(f"{row['ctas_per_sm']} CTAs/SM ({row['occupancy_limit']})")
    if row["waves"]:
        parts.append(f"{row['waves']['SD-64']:.2f} waves at SD-64")
    return ", ".join(parts)


def compile_spec(spec: KernelSpec, arch: int, sass_dir: str | None = None,
                 sms: int | None = None) -> dict:
    """Compile one variant for `arch`; a report row (KEYS). Never raises for a compile error:
    the message goes into the row's "error". sass_dir: write the hot loop's SASS there (one
    text file per variant). sms: SM count for the waves (default SM_COUNTS[arch])."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = spec.kernel
    config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
              for k, v in spec.constexprs.items()}
    config.update(num_warps=spec.num_warps, num_stages=spec.num_stages)
    if spec.label:
        config["variant"] = spec.label
    row = dict(kernel=fn.__name__, dtype=DTYPE_NAMES.get(spec.dtype, str(spec.dtype)),
               config=config, registers=None, spill_bytes=None, shared_bytes=None, mma=None,
               uses_dot=None, cp_async=None, hot_loop=None, loops=None, ldg16_kernel=None,
               ctas_per_sm=None, occupancy_limit=None, grid=None, waves=None, summary=None,
               error=None)
    signature = {}
    for name in fn.arg_names:
        if name in spec.constexprs:
            signature[name] = "constexpr"
        elif name in spec.signature:
            signature[name] = spec.signature[name]
        else:
            row["error"] = f"aot spec names no type for argument {name!r}"
            return row
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(fn.arg_names)
             if str(signature[name]).startswith("*")}
    src = ASTSource(fn=fn, signature=signature, constexprs=dict(spec.constexprs), attrs=attrs)
    knobs = triton.knobs
    log = io.StringIO()
    try:
        # A cache hit would skip ptxas and its -v log: compile every time, log on stdout.
        with knobs.compilation.scope(), knobs.nvidia.scope():
            knobs.compilation.always_compile = True
            knobs.nvidia.dump_ptxas_log = True
            with contextlib.redirect_stdout(log):
                c = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                   options=dict(num_warps=spec.num_warps,
                                                num_stages=spec.num_stages))
    except Exception as e:  # a compile failure is a report row, not a crash
        msg = str(e).strip().splitlines()
        row["error"] = f"{type(e).__name__}: {msg[0] if msg else ''}"[:500]
        row["summary"] = summary(row)
        return row
    ptx, text = c.asm["ptx"], log.getvalue()
    regs = re.search(r"Used (\d+) registers", text)
    spill = re.search(r"(\d+) bytes spill stores", text)
    usage = _resource_usage(c.asm["cubin"]) if regs is None or spill is None else {}
    row["registers"] = int(regs.group(1)) if regs else usage.get("REG")
    row["spill_bytes"] = int(spill.group(1)) if spill else usage.get("LOCAL")
    row["shared_bytes"] = int(c.metadata.shared)
    row["uses_dot"] = "tt.dot" in c.asm["ttir"]
    row["mma"] = _mma(ptx, row["uses_dot"])
    row["cp_async"] = "cp.async" in ptx
    sass = disassemble(c.asm["cubin"])
    if sass is not None:
        found = analyze_sass(sass)
        row.update(hot_loop=found["hot_loop"], loops=found["loops"],
                   ldg16_kernel=found["ldg16_kernel"])
        if sass_dir is not None:
            _dump_sass(sass_dir, row, found, sass)
    if row["registers"] is not None and arch in SM_LIMITS:
        row["ctas_per_sm"], row["occupancy_limit"] = occupancy(
            arch, row["registers"], spec.num_warps, row["shared_bytes"])
    sms = sms or SM_COUNTS.get(arch)
    if sms:
        grid = {name: grid_programs(spec, shape, sms) for name, shape in SD_SHAPES.items()}
        if all(v is not None for v in grid.values()):
            row["grid"] = grid
            if row["ctas_per_sm"]:
                row["waves"] = {k: round(v / (sms * row["ctas_per_sm"]), 2)
                                for k, v in grid.items()}
    row["summary"] = summary(row)
    return row


def _dump_sass(sass_dir: str, row: dict, found: dict, sass: str) -> None:
    """Write the hot loop's SASS (or the whole kernel's when it has no loop) to sass_dir."""
    name = f"{row['kernel']}-{row['dtype']}-{row['config'].get('variant', '')}".strip("-")
    path = os.path.join(sass_dir, re.sub(r"[^\w.=-]+", "_", name) + ".sass")
    os.makedirs(sass_dir, exist_ok=True)
    head = [f"// {name}  {row['config']}",
            f"// registers {row['registers']}, shared {row['shared_bytes']} B"]
    head += [f"// loop {lp['start']}-{lp['end']}: {lp['instructions']} instructions, "
             f"mma work {lp['mma_work']}, {lp['nested']} nested" + ("  <- hot" if lp["hot"] else "")
             for lp in found["loops"]]
    body = found["hot_lines"] if found["hot_lines"] is not None else sass
    with open(path, "w") as f:
        f.write("\n".join(head) + "\n\n" + body + "\n")


_SPECS: dict[int, list[KernelSpec]] = {}


def _compile_index(arch: int, index: int, sass_dir: str | None, sms: int | None) -> dict:
    """Worker: compile variant `index` of collect(arch) (specs hold jit functions, which do
    not pickle, so each worker process rebuilds the list once)."""
    if arch not in _SPECS:
        _SPECS[arch] = collect(arch)
    return compile_spec(_SPECS[arch][index], arch, sass_dir, sms)


def run(arch: int, kernels: str | None = None, dtypes: list[str] | None = None,
        jobs: int = 1, progress: bool = True, sass_dir: str | None = None,
        sms: int | None = None) -> list[dict]:
    """Rows for every collected variant whose kernel name matches the regex `kernels` and
    whose dtype is in `dtypes` (names as in DTYPE_NAMES), compiled for `arch` by `jobs`
    processes (ptxas is single-threaded; one variant takes 0.5-3 s). Rows keep collect()'s
    order whatever the number of jobs. sass_dir, sms: as in compile_spec."""
    specs = collect(arch)
    chosen = [i for i, s in enumerate(specs)
              if (not kernels or re.search(kernels, s.kernel.__name__))
              and (not dtypes or DTYPE_NAMES.get(s.dtype) in dtypes)]
    bar = _progress(len(chosen), arch) if progress else None
    rows: dict[int, dict] = {}
    if jobs <= 1:
        for i in chosen:
            rows[i] = compile_spec(specs[i], arch, sass_dir, sms)
            if bar is not None:
                bar.update(1)
    else:
        import concurrent.futures as cf
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")  # no forked CUDA/Triton state
        with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_compile_index, arch, i, sass_dir, sms): i for i in chosen}
            for fut in cf.as_completed(futures):
                rows[futures[fut]] = fut.result()
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return [rows[i] for i in chosen]


def _progress(total: int, arch: int):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=f"compiling for sm_{arch}", unit="kernel", file=sys.stderr)


def problems(rows: list[dict]) -> list[str]:
    """What the report must not show: compile errors, spills, and 16-bit dot kernels whose
    dots missed wgmma on sm_90 (the CI check and gpu_check.sh's summary read this)."""
    out = []
    for r in rows:
        where = f"{r['kernel']} {r['dtype']} {r['config'].get('variant', '')}".strip()
        if r["error"]:
            out.append(f"{where}: compile error: {r['error']}")
            continue
        if r["spill_bytes"]:
            out.append(f"{where}: {r['spill_bytes']} bytes of spill stores")
    return out


def wgmma_problems(rows: list[dict]) -> list[str]:
    """16-bit kernels with dots that did not land on wgmma (meaningful for sm_90 rows only)."""
    return [f"{r['kernel']} {r['dtype']} {r['config'].get('variant', '')}: dots on {r['mma']}"
            for r in rows if not r["error"] and r["uses_dot"] and r["dtype"] != "float32"
            and r["mma"] != "wgmma"]


def scalar_16bit_load_problems(rows: list[dict]) -> list[str]:
    """Kernels whose hot loop loads global memory 16 bits per instruction (LDG.E.U16 and
    friends, or a 16-bit cp.async): 8x the load instructions of 128-bit vector loads, and no
    cp.async / TMA pipelining for that operand. Typically a row stride the compiler cannot
    prove 16-byte aligned (T = 77 elements) or a gather."""
    out = []
    for r in rows:
        hot = r.get("hot_loop")
        if r["error"] or not hot:
            continue
        n = hot["ldg"].get("16", 0) + hot["ldgsts"].get("16", 0)
        if n:
            out.append(f"{r['kernel']} {r['dtype']} {r['config'].get('variant', '')}: {n} "
                       f"scalar 16-bit global loads per hot-loop iteration ({hot['start']}-{hot['end']})")
    return out


def _compact(d: dict, prefix: str) -> list[str]:
    return [f"{prefix}{k}*{v}" for k, v in sorted(d.items(), key=lambda kv: -int(kv[0]))]


def format_table(rows: list[dict]) -> str:
    """One line per row. Hot-loop columns, per iteration: hot (instructions), mufu (EX2 + other
    MUFU), fsel+isetp, mma (shape*count), loads (g: LDG, cp: LDGSTS, by bits; tma), then
    CTAs/SM with its limit and waves at SD-64/96/128."""
    head = ("kernel", "dtype", "variant", "tiles", "warps", "stages", "regs", "spill", "smem",
            "mma", "cp.async", "hot", "mufu", "fsel+isetp", "mma/iter", "loads/iter", "CTAs/SM",
            "waves 64/96/128", "error")
    lines = []
    for r in rows:
        cfg = r["config"]
        tiles = " ".join(f"{k[6:]}{v}" for k, v in cfg.items() if k.startswith("BLOCK_"))
        hot = r.get("hot_loop")
        if hot:
            hot_cols = (str(hot["instructions"]), f"{hot['mufu_ex2']}+{hot['mufu_other']}",
                        f"{hot['fsel']}+{hot['isetp']}",
                        " ".join(f"{k.split()[-1]}*{v}" for k, v in hot["mma"].items()) or "-",
                        " ".join(_compact(hot["ldg"], "g") + _compact(hot["ldgsts"], "cp")
                                 + ([f"tma*{hot['tma']}"] if hot["tma"] else [])) or "-")
        else:
            hot_cols = ("-",) * 5
        occ = f"{r['ctas_per_sm']} {r['occupancy_limit']}" if r.get("ctas_per_sm") is not None else "-"
        waves = "/".join(f"{v:.1f}" for v in r["waves"].values()) if r.get("waves") else "-"
        lines.append((r["kernel"], r["dtype"], str(cfg.get("variant", "")), tiles,
                      str(cfg["num_warps"]), str(cfg["num_stages"]), str(r["registers"]),
                      str(r["spill_bytes"]), str(r["shared_bytes"]), str(r["mma"]),
                      str(r["cp_async"]), *hot_cols, occ, waves, (r["error"] or "")[:60]))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h)
              for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*("-" * w for w in widths))]
                     + [fmt.format(*l).rstrip() for l in lines])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fasttrack.kernels.compile_report",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, default=90, choices=ARCHS,
                   help="compute capability to compile for, major*10+minor (default: 90)")
    p.add_argument("--json", default=None, help="write the rows to this JSON file")
    p.add_argument("--kernels", default=None, help="regex on kernel names (default: all)")
    p.add_argument("--dtypes", default=None,
                   help="comma-separated subset of float16,bfloat16,float32 (default: all)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1) // 2),
                   help="compiler processes (default: half the CPUs, %(default)s here)")
    p.add_argument("--sass-dump", default=None, metavar="DIR",
                   help="write each variant's hot-loop SASS to a text file in DIR")
    p.add_argument("--sms", type=int, default=None,
                   help="SM count for the waves (default: 132 on sm_90, 108 on sm_80, "
                        "none on sm_86/89)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    dtypes = None
    if args.dtypes:
        dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
        bad = [d for d in dtypes if d not in DTYPE_NAMES.values()]
        if bad:
            p.error(f"--dtypes: unknown {bad}; choose from {sorted(DTYPE_NAMES.values())}")
    start = time.perf_counter()
    rows = run(args.arch, args.kernels, dtypes, jobs=args.jobs, sass_dir=args.sass_dump,
               sms=args.sms)
    print(format_table(rows))
    print()
    for r in rows:
        print(f"{r['kernel']} {r['dtype']} {r['config'].get('variant', '')}: {r['summary']}")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    scalar = scalar_16bit_load_problems(rows)
    bad = problems(rows) + (wgmma_problems(rows) if args.arch == 90 else []) + scalar
    errors = sum(1 for r in rows if r["error"])
    print(f"\n{len(rows)} variants for sm_{args.arch} in {time.perf_counter() - start:.0f} s: "
          f"{errors} compile errors, {sum(1 for r in rows if r['spill_bytes'])} spilling"
          + (f", {len(wgmma_problems(rows))} 16-bit dot kernels off wgmma" if args.arch == 90 else "")
          + f", {len(scalar)} with scalar 16-bit loads in the hot loop")
    for line in bad:
        print("  " + line)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
