"""Shared helpers of the Triton kernels: launch wrapper, dtype handling, block-size heuristics.

Every launcher makes its inputs contiguous, so the kernels address (B, H, N, D) tensors as
``((b * H + h) * N + n) * D + d`` from the sizes alone, with no stride arguments.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Globals read inside @triton.jit code must be tl.constexpr (compiled mode rejects plain floats;
# the interpreter would not notice). The kernels work in base 2: exp(x) = exp2(x * log2(e)).
LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128
MAX_TOKENS = 256


@triton.jit
def load_tile(base, rows, cols, row_mask, col_mask, row_stride):
    """The (len(rows), len(cols)) tile of a row-major matrix at `base`, zeros outside the masks:
    the masked-load prologue every kernel here repeats for q, k, v, cross and their gradients.
    Zero padding is what makes padded head dims and padded tokens drop out of the dots."""
    return tl.load(base + rows[:, None] * row_stride + cols[None, :],
                   mask=row_mask[:, None] & col_mask[None, :], other=0.0)


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def launch(kernel):
    """``kernel`` wrapped by torch.library.wrap_triton, so that a torch.library.triton_op can
    trace the launch; the plain kernel on torch versions without wrap_triton (< 2.6).
    wrap_triton also works under TRITON_INTERPRET=1 (checked with torch 2.13 / triton 3.9)."""
    wrap = getattr(torch.library, "wrap_triton", None)
    return kernel if wrap is None else wrap(kernel)


def pad(n: int) -> int:
    """Block extent covering n: a power of two, at least 16 (tl.dot needs every dim >= 16)."""
    return max(16, triton.next_power_of_2(int(n)))


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision. float32 inputs use exact IEEE products: the default tf32 keeps a
    10-bit mantissa (relative error ~1e-3), far from the fp32 target of 1e-5. For 16-bit inputs
    the products are exact either way and the value is ignored."""
    return "ieee" if dtype == torch.float32 else "tf32"


def check_tensor(name: str, t: torch.Tensor, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")


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


# GPU tile choices below come from compiling every kernel ahead of time with Triton 3.9 for
# sm_90 (and checking sm_80 / sm_86) and reading the register and stack use of the cubins:
# among the tiles tried, the largest that keep the tiles in registers (at most ~100 bytes of
# local-memory spill per thread; fp32 dK/dV at head dim 128 spills more) and stay under the
# ~99 KiB of shared memory of RTX 3090/4090. float32 inputs use exact IEEE dot products, which
# run on FMA units and need far more registers per tile, hence their smaller tiles. These are
# static heuristics, not timed: measurements on a GPU may move them.
# Interpreter (TRITON_INTERPRET=1): each program is a Python loop over numpy tiles; small tiles
# of unequal sizes keep CPU tests fast and make the odd test sizes end every query and key loop
# on a partial tile.

def attention_config(d_pad: int, dv_pad: int, dtype: torch.dtype, kind: str) -> Config:
    """Tiles of the flash kernels; kind is "fwd", "dkdv" (block_n keys per program, block_m
    queries per step) or "dq" (also used by the delta preprocess).

    fp16/bf16: the forward streams 64-key tiles past a 128-query accumulator (as the Triton
    tutorial and FA2). The dK/dV pass keeps 128 keys and steps 32 queries, the dQ pass keeps
    128 queries and steps 32 keys: each program owns a long accumulator and streams short
    tiles. At head dim 128 the dK/dV pass holds two (block_n, 128) accumulators, so it drops to
    32 x 32 and the dQ pass to 64 x 64."""
    if interpreting():
        return Config(32, 16, 1, 1) if kind == "fwd" else Config(16, 32, 1, 1)
    wide = max(d_pad, dv_pad) > 64
    if dtype == torch.float32:
        if kind == "fwd":
            return Config(32, 32, 8, 2) if wide else Config(64, 32, 8, 2)
        return Config(16, 32, 4, 2) if wide else Config(32, 32, 8, 2)
    if kind == "fwd":
        return Config(128, 64, 8, 2 if wide else 3)
    if kind == "dkdv":
        return Config(32, 32, 4, 2) if wide else Config(32, 128, 8, 2)
    return Config(64, 64, 8, 2) if wide else Config(128, 32, 8, 2)


def token_block(t_pad: int) -> int:
    """Token block of the self x cross forward: the whole padded T up to 128, so the P tile is
    recomputed once per 128 tokens; T = 256 splits into two programs (each with a (BLOCK_N, 128)
    fp32 accumulator) rather than one with twice the registers."""
    return min(t_pad, 128)


def self_cross_config(d_pad: int, t_pad: int, dtype: torch.dtype) -> Config:
    """Tiles of the three self x cross kernels. Their programs hold (block, T) tiles (the output,
    or A = P G and the cross rows) next to the (block, D) operands, so the block halves when the
    backward's whole token row is 256 wide."""
    if interpreting():
        return Config(16, 32, 1, 1)
    if dtype == torch.float32:
        return Config(32, 32, 8, 2) if t_pad <= 128 else Config(16, 16, 4, 2)
    return Config(64, 64, 8, 2) if t_pad <= 128 else Config(32, 32, 8, 2)


def cross_config(n_pad: int, d_pad: int, dv_pad: int, dtype: torch.dtype) -> Config | None:
    """Tiles of the fused cross-attention forward, which keeps a whole key row of one head in a
    tile (K, V (n_pad, D) and the (block_m, n_pad) score, probability and head-mean tiles); None
    routes the call to the flash forward plus the head-mean kernel instead.

    On the GPU the fused kernel is taken only for rows up to 32 keys at head dim <= 64 in
    16-bit dtypes: with its head loop, wider rows (the 77 text tokens pad to 128) or wider heads
    spill registers in every tile shape tried, while the two-kernel path does not; it pays one
    more Q K^T product and a second read of q, k and lse. The interpreter takes the fused
    kernel up to 256 keys so that the CPU tests exercise it."""
    if interpreting():
        return Config(16, n_pad, 1, 1) if n_pad <= MAX_TOKENS else None
    if n_pad > 32 or max(d_pad, dv_pad) > 64 or dtype == torch.float32:
        return None
    return Config(64, n_pad, 8, 1)


def probs_config(d_pad: int, dtype: torch.dtype) -> Config:
    """Tiles of the head-mean probability kernel: one (block_m, block_n) fp32 output tile per
    program, heads looped inside."""
    if interpreting():
        return Config(16, 32, 1, 1)
    return Config(32, 32, 8, 2) if dtype == torch.float32 else Config(64, 64, 8, 2)
