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


def attention_config(d_pad: int, dv_pad: int, dtype: torch.dtype, backward: bool) -> Config:
    """Tile sizes for the flash forward and backward kernels.

    GPU: the forward keeps a (128, Dv) accumulator per program and streams 64-key tiles (the
    shape of the Triton tutorial / FA2 forward); at head dim 128, or with 4-byte fp32 tiles,
    the query tile halves. The backward holds two accumulators (dk and dv, or dq) plus the
    recomputed P and dP tiles, so it uses square 64 tiles, 32 at head dim 128 in fp32.
    Pipeline depth 3 for narrow heads, 2 for wide heads and fp32, so the streamed tiles and
    their copies stay under the ~99 KiB of shared memory of consumer GPUs (RTX 3090/4090).
    Interpreter: every program is a Python loop over numpy tiles, so small unequal tiles
    (32 x 16 forward, 16 x 32 backward) keep CPU tests fast and exercise the partial last
    block of both the query and the key loops at small sizes.
    """
    if interpreting():
        return Config(16, 32, 1, 1) if backward else Config(32, 16, 1, 1)
    wide = max(d_pad, dv_pad) > 64
    fp32 = dtype == torch.float32
    stages = 2 if (wide or fp32) else 3
    if backward:
        block = 32 if (wide and fp32) else 64
        return Config(block, block, 8 if wide else 4, stages)
    block_m = 64 if (wide or fp32) else 128
    return Config(block_m, 64, 8 if wide else 4, stages)


def token_block(t_pad: int) -> int:
    """Token block of the self x cross forward: the whole padded T up to 128, so the P tile is
    recomputed once per 128 tokens; T = 256 splits into two programs (each with a (BLOCK_N, 128)
    fp32 accumulator) rather than one with twice the registers."""
    return min(t_pad, 128)


def self_cross_config(d_pad: int, t_pad: int, dtype: torch.dtype) -> Config:
    """Tiles of the self x cross kernels. Their programs hold a (block, T) fp32 tile (the output,
    or A = P G and the cross rows) next to the (block, D) operands, so the block shrinks from 64
    to 32 when T or D is wide; that keeps the register tile near 64 x 128 fp32 per program."""
    if interpreting():
        return Config(16, 32, 1, 1)
    wide = t_pad > 128 or d_pad > 64 or dtype == torch.float32
    block = 32 if wide else 64
    return Config(block, block, 8 if (t_pad > 64 or d_pad > 64) else 4, 2)


def cross_config(n_pad: int, d_pad: int, dv_pad: int, dtype: torch.dtype) -> Config | None:
    """Tiles of the fused cross-attention forward, which keeps the whole key row of a head in one
    tile: K (n_pad, D) and V (n_pad, Dv) in shared memory, scores and the head-mean
    probabilities (block_m, n_pad) in fp32 registers. None when K and V would take more than
    64 KiB (the fused kernel would run out of shared memory); the launcher then uses the flash
    forward plus a separate head-mean kernel.
    block_m keeps block_m * n_pad <= 8192 so the two fp32 row tiles stay in registers."""
    esize = torch.finfo(dtype).bits // 8
    if n_pad > MAX_TOKENS or n_pad * (d_pad + dv_pad) * esize > 64 * 1024:
        return None
    if interpreting():
        return Config(16, n_pad, 1, 1)
    block_m = max(16, min(64, 8192 // n_pad))
    return Config(block_m, n_pad, 8 if block_m * n_pad >= 4096 else 4, 1)


def probs_config(d_pad: int) -> Config:
    """Tiles of the head-mean probability kernel (long key rows): one (64, 64) fp32 output tile
    per program, heads looped inside."""
    if interpreting():
        return Config(16, 32, 1, 1)
    return Config(64, 64, 8 if d_pad > 64 else 4, 2)
