"""Shared helpers of the Triton kernels: the launch point, dtype handling, block-size heuristics.

Every launcher makes its inputs contiguous, so the kernels address (B, H, N, D) tensors as
``((b * H + h) * N + n) * D + d`` from the sizes alone, with no stride arguments.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Globals read inside @triton.jit code must be tl.constexpr (compiled mode rejects plain floats;
# the interpreter would not notice). The kernels work in base 2: exp(x) = exp2(x * log2(e)).
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)

from fasttrack.ops.checks import _fast_ok  # noqa: E402
from fasttrack.ops.checks import check_tensor as _check_tensor  # noqa: E402
from fasttrack.ops.limits import MAX_GRID_YZ, MAX_HEAD_DIM, MAX_TOKENS, SUPPORTED_DTYPES  # noqa: E402

_TRITON_DTYPES = frozenset(SUPPORTED_DTYPES)


@triton.jit
def load_tile(base, rows, cols, row_mask, col_mask, row_stride):
    """The (len(rows), len(cols)) tile of a row-major matrix at `base`, zeros outside the masks:
    the masked-load prologue every kernel here repeats for q, k, v, cross and their gradients.
    Zero padding is what makes padded head dims and padded tokens drop out of the dots."""
    return tl.load(base + rows[:, None] * row_stride + cols[None, :],
                   mask=row_mask[:, None] & col_mask[None, :], other=0.0)


@triton.jit
def load_rows(base, rows, row_mask, COLS: tl.constexpr, BLOCK_C: tl.constexpr,
              MASK_ROWS: tl.constexpr):
    """The (len(rows), BLOCK_C) tile of a row-major (., COLS) matrix at `base`, zeros outside,
    with only the masks that can be false: the rows when MASK_ROWS (a tail tile), the columns
    when COLS < BLOCK_C (a padded head dim), both known at compile time. A full tile of a
    power-of-two head dim is an unmasked load: no predicate per element in the hot loop."""
    cols = tl.arange(0, BLOCK_C)
    ptrs = base + rows[:, None] * COLS + cols[None, :]
    if MASK_ROWS:
        if COLS < BLOCK_C:
            return tl.load(ptrs, mask=row_mask[:, None] & (cols < COLS)[None, :], other=0.0)
        return tl.load(ptrs, mask=row_mask[:, None], other=0.0)
    if COLS < BLOCK_C:
        return tl.load(ptrs, mask=(cols < COLS)[None, :], other=0.0)
    return tl.load(ptrs)


# While set, `launch` hands back a launcher that does nothing (`stub_launches`): host-cost
# measurements then time everything fasttrack does for a call except the device launch.
_STUB = None


class _NoLaunch:
    """``kernel[grid](*args, **kw)`` that launches nothing (the kernel is not run)."""

    def __getitem__(self, grid):
        return _no_launch


def _no_launch(*args, **kwargs):
    return None


def launch(kernel):
    """``kernel`` itself: launchers call ``launch(kernel)[grid](...)``, a direct Triton launch.

    The ops are opaque custom ops under torch.compile (their fake kernels give the shapes), so
    the launch never needs torch.library.wrap_triton, whose eager path cost about 0.2 ms per
    launch and, with num_warps / num_stages, kept a kernel side-table entry per call (a leak).
    Inside `stub_launches()` the launcher is a no-op."""
    return kernel if _STUB is None else _STUB


class stub_launches:
    """Context manager: every Triton launch in fasttrack.kernels does nothing while it is open.

    For host-cost measurements only (fasttrack bench --sections host): outputs are left
    uninitialized. Not thread-safe; nests."""

    def __enter__(self):
        global _STUB
        self._prev, _STUB = _STUB, _NoLaunch()
        return self

    def __exit__(self, *exc):
        global _STUB
        _STUB = self._prev
        return False


def pad(n: int) -> int:
    """Block extent covering n: a power of two, at least 16 (tl.dot needs every dim >= 16).
    Plain integer math: triton.next_power_of_2 is a constexpr function, ~5 us per host call."""
    return max(16, next_pow2(n))


def next_pow2(n: int) -> int:
    """The smallest power of two >= n >= 1 (host side; triton.next_power_of_2 is slower)."""
    return 1 << (int(n) - 1).bit_length()


def as_contiguous(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """t in `dtype`, contiguous; t itself when it already is (Tensor.to is a full dispatcher
    call, ~1 us, even when it has nothing to do)."""
    if t.dtype != dtype:
        t = t.to(dtype)
    return t.contiguous()


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for the launch grids (triton.cdiv costs a constexpr-function call)."""
    return -(-a // b)


def fast_inputs_ok(q, k, x, x_rank: int) -> bool:
    """The launchers' common case in a few attribute reads (fasttrack.ops.checks._fast_ok plus
    the Triton limits: 16/32-bit floats, head dims <= 128; for x = v its Dv too). False sends a
    launcher to its full checks, which raise with the argument at fault."""
    return (_fast_ok(q, k, x, x_rank) and q.dtype in _TRITON_DTYPES and q.shape[3] <= MAX_HEAD_DIM
            and (x_rank == 3 or x.shape[3] <= MAX_HEAD_DIM))


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision. float32 inputs use exact IEEE products: the default tf32 keeps a
    10-bit mantissa (relative error ~1e-3), far from the fp32 target of 1e-5. For 16-bit inputs
    the products are exact either way and the value is ignored."""
    return "ieee" if dtype == torch.float32 else "tf32"


def check_tensor(name: str, t: torch.Tensor, ndim: int, dims: str) -> None:
    """fasttrack.ops.checks.check_tensor with the dtypes the Triton kernels take."""
    _check_tensor(name, t, ndim, dims, SUPPORTED_DTYPES)


def check_head_dims(**dims: int) -> None:
    for name, d in dims.items():
        if not 1 <= d <= MAX_HEAD_DIM:
            raise ValueError(f"{name} must be in [1, {MAX_HEAD_DIM}], got {d}")


@dataclass(frozen=True)
class Config:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    heads: int = 1  # heads one program handles (self x cross backward: shared C G^T tiles)
    tma: bool = False  # attention forward: K, V through tensor descriptors (sm_90)
    head_outer: bool = False  # self x cross forward: heads outside the query loop (K loaded once)


@dataclass(frozen=True)
class KernelSpec:
    """One compiled variant of a kernel, as a launcher would select it, for the ahead-of-time
    compile report (kernels/compile_report.py). Every kernel module exposes
    ``aot_specs(arch) -> list[KernelSpec]`` built from the same config functions its launchers
    call, so the report compiles exactly what a GPU run would.

    signature: runtime argument name -> Triton type ("*fp16", "*fp32", "i32", "fp32"); pointers
    are compiled as 16-byte aligned (torch allocations are). constexprs: constexpr name -> value.
    label: what selects this variant (e.g. "D=40 T=77"), shown in the report's config column.
    """
    kernel: object
    dtype: torch.dtype
    signature: dict
    constexprs: dict
    num_warps: int
    num_stages: int
    label: str = ""


def device_arch(device: torch.device) -> int:
    """Compute capability of `device` as major*10+minor (90 for H100), 0 for the interpreter
    (CPU tensors under TRITON_INTERPRET=1): the key of every config function below."""
    return device_facts(_index(device))[0]


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of `device`; 4 under the interpreter, so that the CPU tests
    with their few programs take the split-query paths that small grids take on a GPU."""
    return device_facts(_index(device))[1]


def _index(device: torch.device) -> int:
    """The CUDA index of `device` (the current device for a bare "cuda"), -1 for any other."""
    if device.type != "cuda":
        return -1
    return device.index if device.index is not None else torch.cuda.current_device()


def device_facts(index: int) -> tuple[int, int]:
    """(device_arch, sm_count) of the device with index `index`, the tensor.get_device() of an
    input: -1 (a CPU tensor, the interpreter) gives (0, 4). The launchers key their per-shape
    plans on the index (one attribute read per call) and look the facts up inside the plan."""
    return _cuda_facts(index) if index >= 0 else (0, 4)


@functools.lru_cache(maxsize=None)
def _cuda_facts(index: int) -> tuple[int, int]:
    """(compute capability, SMs) of CUDA device `index`, asked once per process (asking the
    driver costs microseconds on every launch)."""
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor, torch.cuda.get_device_properties(index).multi_processor_count


def _scratch(size: int, alignment: int, stream):
    return torch.empty(size, device=torch.cuda.current_device(), dtype=torch.int8)


def set_tma_allocator() -> None:
    """Give Triton an allocator for the global scratch that in-kernel tensor descriptors
    (tl.make_tensor_descriptor) live in: torch's caching allocator on the current device.
    Triton keeps it per thread (a ContextVar), so the TMA launch path sets it on every call
    (a context-variable write); kernels without descriptors never call it."""
    triton.set_allocator(_scratch)


def row_stride(T: int, dtype: torch.dtype) -> int:
    """The row stride kernels read a (., ., T) operand with (C and G of self x cross, the
    cross-attention probability gradient): T rounded up to 16 bytes (77 -> 80 in 16-bit), so
    that every row starts 16-byte aligned and tiles load as 16-byte vectors."""
    per = 16 // dtype.itemsize
    return -(-T // per) * per


def padded_rows(x: torch.Tensor) -> torch.Tensor:
    """x (B, N, T) contiguous as a (B, N, row_stride(T)) buffer with zero columns past T; x
    itself when T is already aligned. One copy of B N T elements, against the N^2 work of the
    kernels that read it."""
    T = x.shape[2]
    cs = row_stride(T, x.dtype)
    if cs == T:
        return x
    return torch.nn.functional.pad(x, (0, cs - T))


def check_grid(kernel: str, grid: tuple) -> tuple:
    """`grid` unchanged, or ValueError when a y/z dimension passes CUDA's 65535 (the launch
    would fail with an opaque driver error). The backend's dispatch limits (fasttrack.ops)
    refuse such inputs before a launcher sees them; this is the launcher's own guard."""
    for axis, n in zip("yz", grid[1:]):
        if n > MAX_GRID_YZ:
            raise ValueError(f"{kernel}: grid {axis} = {n} programs > {MAX_GRID_YZ} (CUDA's limit); "
                             "use fewer batch x heads per call")
    return grid


# Tile choices, per architecture. Every number below comes from the ahead-of-time compile
# report (python -m fasttrack.kernels.compile_report --arch 90 / 80 / 89): the largest tiles
# that keep every accumulator in registers with no spill stores, and, on sm_90, put every
# 16-bit tl.dot on wgmma. wgmma needs the product's M (rows) to be a multiple of 64 per
# warpgroup, so on sm_90 every dot's row block is >= 64. They are static heuristics, not
# timed: a GPU session may move them.
# - sm_90 (H100/H200): up to 227 KiB of shared memory per program.
# - sm_80/86/89 (A100, RTX 3090/4090): about 99 KiB on 86/89 (163 KiB on 80); sized for 99.
# - float32 inputs use exact IEEE dot products ("ieee"), which run on FMA units and hold far
#   more registers per tile, hence their smaller tiles on every architecture.
# Interpreter (arch 0): each program is a Python loop over numpy tiles; small tiles of unequal
# sizes keep CPU tests fast and make the odd test sizes end every loop on a partial tile.

@functools.lru_cache(maxsize=None)
def attention_config(d_pad: int, dv_pad: int, dtype: torch.dtype, kind: str, arch: int) -> Config:
    """Tiles of the flash kernels; kind is "fwd" (block_m queries per program, block_n keys per
    step), "bwd" (block_n keys per program, block_m queries per step) or "dq" (the delta
    preprocess: block_m queries per program, block_n keys per step).

    16-bit forward: a 128-query accumulator streams key tiles (the Triton tutorial, FA2). On
    sm_90 the D <= 64 tiles use one warpgroup (4 warps) with three stages, so that two programs
    fit on an SM by registers (a compile-report test holds this); the issue's GPU lab sweep
    decides whether that pays. Backward: every product is (keys x .) except dQ (queries x D),
    so block_m >= 64 keeps dQ on wgmma too where registers allow."""
    if arch == 0:
        if kind == "fwd":
            return Config(32, 16, 1, 1)
        return Config(16, 32, 1, 1)
    wide = max(d_pad, dv_pad) > 64
    if dtype == torch.float32:
        # FMA dots: 8 warps halve the registers per thread of every tile (no spills).
        if kind == "fwd":
            # The forward's two tile instantiations (full tiles, masked tail) cost registers:
            # (64, 16) / (32, 32) spilled 176 / 604 bytes on sm_90.
            return Config(16, 16, 8, 2) if wide else Config(32, 16, 8, 2)
        if kind == "bwd":
            return Config(16, 16, 8, 2)
        return Config(32, 16, 4, 2) if wide else Config(32, 32, 8, 2)
    if kind == "fwd":
        if arch >= 90:
            return Config(128, 64, 8, 2) if wide else Config(128, 64, 4, 3)
        return Config(128, 64, 8, 2 if wide else 3)
    if kind == "bwd":
        # One pass holds K, V, the dK, dV accumulators and five products' operands: on sm_90
        # 64 x 64 at 8 warps is the largest D = 64 tile without spills (64 x 128 spilled 84-128
        # bytes); D = 128 keeps 32 queries per step.
        if arch >= 90:
            return Config(32, 64, 8, 2) if wide else Config(64, 64, 8, 2)
        return Config(32, 32, 4, 2) if wide else Config(32, 128, 8, 2)
    return Config(64, 32, 8, 2) if wide else Config(128, 32, 8, 2)


def token_block(t_pad: int) -> int:
    """Token block of the self x cross forward: the whole padded T up to 128, so the P tile is
    recomputed once per 128 tokens; T = 256 splits into two programs (each with a (BLOCK_N, 128)
    fp32 accumulator) rather than one with twice the registers."""
    return min(t_pad, 128)


def query_splits(n_programs: int, m_blocks: int, sms: int) -> int:
    """How many programs share one output tile, each over its own range of the `m_blocks` query
    blocks: the self x cross forward (cdiv(Nk, BLOCK_N) x token blocks x B programs: 32 at
    N=1024, B=2 on a 132-SM H100) and the attention backward at short key rows (one key block
    x B*H). Split until there are about two programs per SM, keeping at least 4 query blocks
    per program so that the partial sums stay few."""
    if n_programs >= 2 * sms:
        return 1
    return max(1, min(cdiv(2 * sms, n_programs), m_blocks // 4))


@functools.lru_cache(maxsize=None)
def self_cross_config(d_pad: int, t_pad: int, dtype: torch.dtype, kind: str, arch: int) -> Config:
    """Tiles of the self x cross kernels, by kind:
    - "fwd": block_n keys per program, block_m queries per step, heads summed inside;
    - "pre" (backward row terms): block_m queries per program, block_n keys per step, heads
      inside in chunks of up to `heads` (one C G^T tile per chunk);
    - "bwd": block_n keys per program, block_m queries per step, dK stored and dQ added per
      tile; `heads` = 2 pairs two heads on one program so that they share each C G^T tile,
      where the second dK accumulator fits.
    The backward programs hold (block, T) tiles (cross rows, G rows, the dcross accumulator:
    the whole padded T) next to the (block, D) operands."""
    if arch == 0:
        # Interpreter: pairs and two-head chunks, so the CPU tests (H = 2, 3) cover the
        # paired path, its masked odd head, and a chunk loop that runs twice.
        return Config(16, 32, 1, 1, heads=2)
    wide = t_pad > 128 or d_pad > 64
    if dtype == torch.float32:
        # FMA dots with 8 warps; wider tiles spill 4-24 bytes at some (D, T) on sm_80 or sm_90.
        # The fp32 "ieee" dots keep their operands in registers; which tile ptxas fits
        # without spilling varies with the architecture (searched over (D, T) per arch with
        # the compile report). num_stages=1 for the backward row terms: pipelining around
        # their head loop spills 0.3-4 KB.
        if kind == "fwd":
            return Config(16, 16, 8, 2) if arch < 89 else Config(32, 16, 4, 2)
        if kind == "pre":
            if arch >= 90:
                return Config(16, 16, 16, 1, heads=2) if t_pad > 128 else Config(16, 32, 4, 1, heads=2)
            if arch == 89:
                return Config(16, 16, 4, 1, heads=2)
            # 8 warps spilled 8-36 bytes at T=77 on sm_80 with the aligned C stride
            return Config(16, 32, 4, 1, heads=2)
        # The one-pass backward: 8 warps spilled 4 bytes at D=64, T=1 on sm_90; on sm_80 4
        # warps spilled 8 bytes at D=40, T=1, two stages 4 bytes at D=40, T=77.
        return Config(16, 16, 4, 2) if arch >= 90 else Config(16, 16, 8, 1)
    if kind == "fwd":
        # 128-key programs on sm_90 (231 registers at D=64, T=77, no spills): each query
        # block's q tile and lse row meet twice the keys per load.
        return Config(64, 128, 8, 2) if arch >= 90 else Config(64, 64, 8, 2)
    if kind == "pre":
        if arch < 90:
            return Config(32, 32, 8, 2, heads=16)
        # D = 128 with T = 256 sits at 236-255 registers: no pipelining there (triton 3.6
        # spills 20 bytes with two stages).
        return Config(64, 32, 8, 1 if d_pad > 64 and t_pad > 128 else 2, heads=16)
    # The one-pass backward (dK and dQ per tile): on sm_80 (64, 32) tiles spilled 4-12 bytes.
    if wide:
        return Config(32, 64, 4, 2) if arch >= 90 else Config(32, 64, 8, 2)
    return Config(64, 64, 8, 2, heads=2) if arch >= 90 else Config(32, 64, 8, 2, heads=2)


@functools.lru_cache(maxsize=None)
def cross_config(n_pad: int, d_pad: int, dv_pad: int, dtype: torch.dtype, arch: int) -> Config | None:
    """Tiles of the fused cross-attention forward, which keeps a whole key row of one head in a
    tile (K, V (n_pad, D) and the (block_m, n_pad) score, probability and head-mean tiles) and
    writes out, lse and the head-mean probs in one launch; None routes the call to the flash
    forward plus the head-mean kernel (one more Q K^T pass, a second read of q, k and lse).

    GPU: rows up to 128 keys (the 77 text tokens) at head dim <= 64 in 16-bit dtypes, with 8
    warps, so that the (block_m, 128) fp32 head-mean accumulator and the score tile share the
    registers of 256 threads (4 warps spilled at 128 keys). The interpreter takes the fused
    kernel up to 256 keys so that the CPU tests exercise it."""
    if arch == 0:
        return Config(16, n_pad, 1, 1) if n_pad <= MAX_TOKENS else None
    if n_pad > 128 or max(d_pad, dv_pad) > 64 or dtype == torch.float32:
        return None
    return Config(64, n_pad, 4, 1) if n_pad <= 32 else Config(64, n_pad, 8, 2)


# The softmax backward's row term delta = sum_j P_ij dP_ij is summed exactly over the keys (one
# more Q K^T and dO V^T pass in the preprocess) up to this many keys, and taken from the stored
# output as rowsum(dO * O) (FA2) beyond. Rounding O to 16 bits shifts delta by ~|dO| |O| u for the
# whole row; that shift reaches dQ_i as s * err_i * sum_j P_ij k_j, which does not cancel over the
# keys, while dQ itself does: relative to dQ it shrinks like 1/sqrt(keys). At 29-32 keys it made
# bf16 dQ 7x (fp16 2.7x) less accurate than plain PyTorch (H200, 2026-12-04; the interpreter shows
# the same in fp16); at 77+ keys the FA2 form stayed within the 2x rule. The extra pass costs
# what the dQ pass costs for its first two products, cheap on the short rows where it is needed.
EXACT_DELTA_MAX_KEYS = 256


def exact_delta(nk: int) -> bool:
    """Whether the attention backward sums delta exactly over `nk` keys (EXACT_DELTA_MAX_KEYS)."""
    return nk <= EXACT_DELTA_MAX_KEYS


@functools.lru_cache(maxsize=None)
def probs_config(d_pad: int, dtype: torch.dtype, arch: int) -> Config:
    """Tiles of the head-mean probability kernel: one (block_m, block_n) fp32 output tile per
    program, heads looped inside."""
    if arch == 0:
        return Config(16, 32, 1, 1)
    return Config(32, 32, 8, 2) if dtype == torch.float32 else Config(64, 64, 4, 2)


TRITON_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def ptr(dtype: torch.dtype) -> str:
    """Triton signature type of a pointer to `dtype` elements (for KernelSpec.signature)."""
    return "*" + TRITON_TYPES[dtype]


# Sizes the compile report compiles for (issue 9): head dims of SD (40, 64) and wide heads
# (128); token counts 1, 77 (CLIP) and 256 (the fused-kernel limit).
AOT_HEAD_DIMS = (40, 64, 128)
AOT_TOKENS = (1, 77, 256)
