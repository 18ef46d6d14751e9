"""Fused DeTrack box branch: a few launches per denoising block, batched over targets.

Computes, for every target t (DESIGN.md 1.4; reference: fasttrack.trackers.detrack.box_branch):

    b'  = b + Wo Attn(Wq LN1(b) + bq, K_x, V_x) + bo
    b'' = b' + W2 GELU(W1 LN2(b') + c1) + c2
    out = b'' - (Wn2 ReLU(Wn1 b'' + n1) + n2)

Shapes: b (B, Nq, C) (Nq = 4 box tokens), k, v (B, H, Ns, D) with C = H * D, any strides (the
visual block's K/V of the search tokens are strided views of its qkv tensor and are read in
place); out (B, Nq, C) in b's dtype. Weights in nn.Linear layout (out, in), contiguous.

Run compiled once, on an H200 (sm_90, triton 3.6, 2026-12-04): correct in float16, bfloat16
and float32 (tests/test_ops_gpu.py::test_box_branch, test_box_branch_kernel.py), but DeTrack-256
patched with it ran 7.47 ms per frame against 6.69 ms eager PyTorch
(benchmarks/results/gpu-h200-2026-12-04/), which is why fasttrack.ops.dispatch keeps it
out of backend="auto".

Design: the rows of all targets are flattened into one (M, C) matrix, M = B * Nq, and every
linear layer is one skinny matmul over those M rows, split over output columns (and row
blocks) across programs, on tensor cores:

    _box_branch_layernorm_kernel   LN1(b)                    -> xn   (M, C)
    _box_branch_linear_kernel      xn Wq^T + bq              -> q    (M, C)
    _box_branch_attention_kernel   softmax(q_h K_h^T / sqrt(D)) V_h per (target, head) -> a (M, C)
    _box_branch_linear_kernel      b + a Wo^T + bo           -> b'   (M, C)
    _box_branch_layernorm_kernel   LN2(b')                   -> xn   (M, C)
    _box_branch_linear_kernel      GELU(xn W1^T + c1)        -> hid  (M, HID)
    _box_branch_linear_kernel      b' + hid W2^T + c2        -> b''  (M, C)
    _box_branch_linear_kernel      ReLU(b'' Wn1^T + n1)      -> nh   (M, NPH)
    _box_branch_linear_kernel      b'' - (nh Wn2^T + n2)     -> out  (B, Nq, C)

Nine launches; every intermediate lives in one fp32 workspace (float64 for float64 inputs) of
M * (5 C + HID + NPH) values (workspace_size), tiny next to the weights.

Swap-AB: with Nq = 4 rows per target the row count M is the short side, and tl.dot needs every
dim >= 16 while Hopper's wgmma needs 64 rows per warp group in its M dimension. So each linear
program computes the transposed tile Y^T = W X^T: the BLOCK_N = 64 weight rows (output
columns) are the MMA's M side and the BLOCK_M = 16 / 32 / 64 token rows (chosen from M, masked
beyond M) its N side. One target pads 4 rows to 16 (4x the MMA work, which is free: the stage
is bound by streaming the weights); from 16 targets on nothing is wasted. The attention does
the same per (target, head): S^T = K Q^T (BLOCK_S keys x 16 query columns) and O^T = V^T P^T,
with the online softmax of FlashAttention running down the key axis. 16-bit inputs run tensor-
core dots (operands in the input dtype, the fp32 workspace rows rounded to it as the PyTorch
module rounds its activations; fp32 accumulation); float32 inputs use exact IEEE dots
(input_precision="ieee", FMA units), float64 (interpreter tests) float64 dots.

Numerics: LayerNorm statistics are two passes (mean, then centred squares) instead of
E[x^2] - E[x]^2, which cancels badly when |mean| >> std; GELU is the exact erf form (torch's
default); the residual stream b', b'' stays fp32 between stages.

Parallelism: a stage with N output columns runs cdiv(N, 64) x cdiv(M, BLOCK_M) programs, e.g.
12 for C = 768 at one target (48 for fc1). Few programs means few SMs pulling the weights; if
a GPU shows the stages starved for bandwidth at small M, split-K is the next step.

Interpreter (TRITON_INTERPRET=1, CPU tensors): each program is a Python loop over numpy tiles;
16-row blocks, 32-wide column / reduction tiles and 16-key steps keep the tests fast while odd
test sizes (C = 48, Ns = 37, HID = 120) end every loop on a masked partial tile.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import triton
import triton.language as tl

from fasttrack.ops.limits import BOX_BRANCH_WEIGHTS, MAX_GRID_YZ as _MAX_GRID_YZ
from fasttrack.ops.limits import TRITON as _LIMITS

from ._common import KernelSpec

__all__ = ["box_branch_fwd", "box_branch_reasons", "box_branch_config", "aot_specs",
           "WEIGHT_NAMES", "workspace_size"]

# Order of the 16 weight tensors the launcher takes (names of the reference BoxBranch module),
# the box_branch op's weight order of every backend.
WEIGHT_NAMES = BOX_BRANCH_WEIGHTS

# Epilogues of _box_branch_linear_kernel (constexpr codes).
ACT_NONE, ACT_GELU, ACT_RELU = 0, 1, 2
RES_NONE, RES_ADD, RES_SUB = 0, 1, 2  # y, residual + y, residual - y



@triton.jit
def _mult16(n):
    """n, for an n the launcher checked to be a multiple of 16, written so that Triton's axis
    analysis can see it: (n // 16) * 16 carries divisibility 16, which tl.multiple_of and
    tl.assume on a scalar argument do not (Triton 3.9), and that divisibility is what lets masked
    tile loads vectorize."""
    return (n // 16) * 16


@triton.jit
def _row_offsets(rows, RPB, stride0, stride1):
    """Element offsets of flattened rows r = t * RPB + i of a (T, RPB, C) tensor with strides
    (stride0, stride1, 1), in int64: t * stride0 exceeds 2^31 for large batches."""
    r = rows.to(tl.int64)
    return (r // RPB) * stride0 + (r % RPB) * stride1


@triton.jit
def _box_branch_layernorm_kernel(
    X, Y, GAMMA, BETA, M, C, RPB, stride_x0, stride_x1, eps,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):
    """Y[r, :] = (X[r, :] - mean_r) / sqrt(var_r + eps) * gamma + beta for BLOCK_M flattened
    rows r per program; X rows at _row_offsets(r, RPB, stride_x0, stride_x1) (unit column
    stride, any dtype), Y (M, C) row-contiguous in ACC. Biased variance, as torch."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    x_rows = _row_offsets(rows, RPB, stride_x0, stride_x1)
    y_rows = rows.to(tl.int64) * C
    s1 = tl.zeros([BLOCK_M], ACC)
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        m = rmask[:, None] & (cs[None, :] < C)
        s1 += tl.sum(tl.load(X + x_rows[:, None] + cs[None, :], mask=m, other=0.0).to(ACC), 1)
    mean = s1 / C
    s2 = tl.zeros([BLOCK_M], ACC)
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        m = rmask[:, None] & (cs[None, :] < C)
        x = tl.load(X + x_rows[:, None] + cs[None, :], mask=m, other=0.0).to(ACC)
        d = tl.where(m, x - mean[:, None], 0.0)
        s2 += tl.sum(d * d, 1)
    rstd = 1.0 / tl.sqrt(s2 / C + eps)
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        cmask = cs < C
        m = rmask[:, None] & cmask[None, :]
        x = tl.load(X + x_rows[:, None] + cs[None, :], mask=m, other=0.0).to(ACC)
        g = tl.load(GAMMA + cs, mask=cmask, other=0.0).to(ACC)
        beta = tl.load(BETA + cs, mask=cmask, other=0.0).to(ACC)
        y = (x - mean[:, None]) * rstd[:, None] * g[None, :] + beta[None, :]
        tl.store(Y + y_rows[:, None] + cs[None, :], y, mask=m)


@triton.jit
def _box_branch_linear_kernel(
    X, W, BIAS, R, Y, M, N, K, RPB,
    stride_x0, stride_x1, stride_r0, stride_r1, stride_y0, stride_y1,
    ACT: tl.constexpr, RES: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_K: tl.constexpr, ALIGNED: tl.constexpr, OUT_ALIGNED: tl.constexpr,
    PRECISION: tl.constexpr, ACC: tl.constexpr,
):
    """Y = R (+|-) act(X W^T + bias) on the (BLOCK_M rows x BLOCK_N columns) tile of program
    (row block, column block): X (M, K) flattened rows (any dtype, unit column stride), W (N, K)
    contiguous in the input dtype, bias (N,), R and Y (M, N) flattened rows; every row tensor is
    addressed through _row_offsets with its (stride0, stride1) and RPB rows per target.

    ACT: ACT_NONE, ACT_GELU (exact erf GELU), ACT_RELU; RES: RES_NONE (Y = act(.)), RES_ADD
    (Y = R + act(.)), RES_SUB (Y = R - act(.)). Computed as Y^T = W X^T (swap-AB, module
    docstring): the weight tile is the MMA's long side. X is rounded to W's dtype before the dot
    (16-bit: tensor cores, fp32 accumulation). Padded rows, columns and reduction elements load
    as 0, contribute nothing and are never stored.

    ALIGNED: K and X's row strides are multiples of 16 elements and X, W are 16-byte aligned;
    OUT_ALIGNED: the same for N, R's and Y's row strides and pointers (launcher-checked).
    The hints let the tile loads (and the epilogue's load / store) vectorize. Triton's JIT would
    specialize the same from the values; the constexprs make the ahead-of-time compile (which
    sees only "i32") build the variant a GPU run gets. They are separate because the epilogue
    touches the caller's b / out views, which may be unaligned while the weight stream is not."""
    if ALIGNED:
        K = _mult16(K)
        stride_x0 = _mult16(stride_x0)
        stride_x1 = _mult16(stride_x1)
    if OUT_ALIGNED:
        N = _mult16(N)
        stride_r0 = _mult16(stride_r0)
        stride_r1 = _mult16(stride_r1)
        stride_y0 = _mult16(stride_y0)
        stride_y1 = _mult16(stride_y1)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    x_rows = _row_offsets(rows, RPB, stride_x0, stride_x1)
    w_rows = cols.to(tl.int64) * K
    acc = tl.zeros([BLOCK_N, BLOCK_M], ACC)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < K
        w = tl.load(W + w_rows[:, None] + ks[None, :], mask=cmask[:, None] & kmask[None, :],
                    other=0.0)
        xt = tl.load(X + x_rows[None, :] + ks[:, None], mask=kmask[:, None] & rmask[None, :],
                     other=0.0)
        acc = tl.dot(w, xt.to(W.dtype.element_ty), acc, input_precision=PRECISION, out_dtype=ACC)
    y = acc + tl.load(BIAS + cols, mask=cmask, other=0.0).to(ACC)[:, None]
    if ACT == 1:
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
    elif ACT == 2:
        y = tl.maximum(y, 0.0)
    mask = cmask[:, None] & rmask[None, :]
    if RES != 0:
        r_rows = _row_offsets(rows, RPB, stride_r0, stride_r1)
        res = tl.load(R + r_rows[None, :] + cols[:, None], mask=mask, other=0.0).to(ACC)
        if RES == 1:
            y = res + y
        else:
            y = res - y
    y_rows = _row_offsets(rows, RPB, stride_y0, stride_y1)
    tl.store(Y + y_rows[None, :] + cols[:, None], y.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _box_branch_attention_kernel(
    Q, K, V, O, NQ, NS, C, D,
    stride_kb, stride_kh, stride_kn, stride_kd, stride_vb, stride_vh, stride_vn, stride_vd,
    BLOCK_Q: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
    ALIGNED: tl.constexpr, PRECISION: tl.constexpr, ACC: tl.constexpr,
):
    """Program (t, h): O[t * NQ + i, h * D + d] = sum_j softmax_j(scale q_i . k_j) v_j[d] for
    the NQ box queries of target t, q_i = Q[t * NQ + i, h * D : (h + 1) * D]; Q and O are (M, C)
    row-contiguous workspaces in ACC, K, V (B, H, NS, D) any strides, in the input dtype.

    Transposed (swap-AB): S^T = K Q^T is (BLOCK_S keys, BLOCK_Q queries) and O^T = V^T P^T
    (BLOCK_D, BLOCK_Q), so the keys and the head dim are the MMA's long sides and the NQ = 4
    queries pad only to BLOCK_Q = 16. The softmax runs online down the key axis (FlashAttention);
    padded query columns see zero queries (finite scores) and are never stored.

    ALIGNED: K and V have unit head-dim stride, their other strides, C and D are multiples of 16
    elements and the pointers 16-byte aligned (launcher-checked; as the qkv views of a ViT are):
    the key and value rows then load as contiguous vectors."""
    if ALIGNED:
        stride_kd = 1
        stride_vd = 1
        C = _mult16(C)
        D = _mult16(D)
        stride_kb = _mult16(stride_kb)
        stride_kh = _mult16(stride_kh)
        stride_kn = _mult16(stride_kn)
        stride_vb = _mult16(stride_vb)
        stride_vh = _mult16(stride_vh)
        stride_vn = _mult16(stride_vn)
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    offs_q = tl.arange(0, BLOCK_Q)
    qmask = offs_q < NQ
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    # 1/sqrt(D) computed in ACC so float64 runs are exact to float64 rounding.
    scale = 1.0 / tl.sqrt(tl.full([1], D, ACC))
    q_base = Q + t * NQ * C + h * D
    qt = tl.load(q_base + offs_q[None, :] * C + offs_d[:, None],
                 mask=dmask[:, None] & qmask[None, :], other=0.0).to(K.dtype.element_ty)
    k_base = K + t * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + t * stride_vb + h.to(tl.int64) * stride_vh
    # Every key step holds at least one valid key (NS >= 1), so m_i is finite after the first
    # step and exp(m_old - m_new) = exp(-inf) = 0 there: no NaN from masked keys.
    m_i = tl.full([BLOCK_Q], float("-inf"), ACC)
    l_i = tl.zeros([BLOCK_Q], ACC)
    acc = tl.zeros([BLOCK_D, BLOCK_Q], ACC)
    for s0 in range(0, NS, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        smask = offs_s < NS
        offs_s64 = offs_s.to(tl.int64)
        kt = tl.load(k_base + offs_s64[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                     mask=smask[:, None] & dmask[None, :], other=0.0)
        s = tl.dot(kt, qt, input_precision=PRECISION, out_dtype=ACC) * scale
        s = tl.where(smask[:, None], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[None, :])
        l_i = l_i * alpha + tl.sum(p, 0)
        vt = tl.load(v_base + offs_d[:, None] * stride_vd + offs_s64[None, :] * stride_vn,
                     mask=dmask[:, None] & smask[None, :], other=0.0)
        acc = acc * alpha[None, :]
        acc = tl.dot(vt, p.to(V.dtype.element_ty), acc, input_precision=PRECISION, out_dtype=ACC)
        m_i = m_new
    o = acc / l_i[None, :]
    tl.store(O + t * NQ * C + h * D + offs_q[None, :] * C + offs_d[:, None], o,
             mask=dmask[:, None] & qmask[None, :])


@dataclass(frozen=True)
class BoxBranchConfig:
    """Launch parameters of the box-branch kernels (box_branch_config).

    block_m: flattened token rows per linear program (the dot's N side, >= 16);
    block_n: output columns per linear program (the dot's M side: 64 = one wgmma warp group);
    block_k: reduction step of the linear kernel; num_warps / num_stages: of the linear kernel.
    block_q, block_s, block_d: padded queries, key step and padded head dim of the attention
    kernel, run with attn_warps / attn_stages. ln_block_m, ln_block_c: LayerNorm rows and
    column chunk per program (ln_warps warps, ln_stages stages)."""
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    block_q: int
    block_s: int
    block_d: int
    attn_warps: int
    attn_stages: int
    ln_block_m: int
    ln_block_c: int
    ln_warps: int
    ln_stages: int


def _pad16(n: int) -> int:
    return max(16, triton.next_power_of_2(int(n)))


def box_branch_config(rows: int, nq: int, head_dim: int, dtype: torch.dtype,
                      interpret: bool) -> BoxBranchConfig:
    """Tiles for M = `rows` flattened box-token rows (B * Nq), Nq box tokens per target, head
    dim D, input dtype; `interpret` for the Triton interpreter. The one source of the block sizes
    for both box_branch_fwd and aot_specs.

    GPU: block_n = 64 output columns (one wgmma warp group of 4 warps on sm_90, mma.sync on
    sm_80 / sm_89) by block_m = 16 / 32 / 64 rows (the fewest that cover M, at most 64 so that
    many targets spread over row blocks); 16-bit inputs reduce in 64-element steps (128-byte
    rows of the weight tile) over a 4-stage software pipeline (at block_m = 64: 88 KiB of shared
    memory on sm_90, 72 KiB on sm_89, under its ~99 KiB); float32 (FMA IEEE dots) in 32-element
    steps, 2 stages. Static choices read off the ahead-of-time compile with Triton 3.9 (no
    spills; wgmma for 16-bit on sm_90), not timed on a GPU.
    """
    block_q = _pad16(nq)
    block_d = _pad16(head_dim)
    if interpret:
        return BoxBranchConfig(block_m=16, block_n=32, block_k=32, num_warps=1, num_stages=1,
                               block_q=block_q, block_s=16, block_d=block_d, attn_warps=1,
                               attn_stages=1, ln_block_m=16, ln_block_c=32, ln_warps=1, ln_stages=1)
    block_m = min(64, _pad16(rows))
    if dtype == torch.float32 or dtype == torch.float64:
        return BoxBranchConfig(block_m=block_m, block_n=64, block_k=32, num_warps=4, num_stages=2,
                               block_q=block_q, block_s=32, block_d=block_d, attn_warps=4,
                               attn_stages=2, ln_block_m=16, ln_block_c=128, ln_warps=4, ln_stages=1)
    return BoxBranchConfig(block_m=block_m, block_n=64, block_k=64, num_warps=4, num_stages=4,
                           block_q=block_q, block_s=64, block_d=block_d, attn_warps=4,
                           attn_stages=2, ln_block_m=16, ln_block_c=128, ln_warps=4, ln_stages=1)


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _precision(dtype: torch.dtype) -> str:
    """float32 / float64: exact IEEE products (tf32 would keep a 10-bit mantissa, ~1e-3 relative
    error, far from the fp32 target of 1e-5); 16-bit: exact products either way, value ignored."""
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def _kernel_is_interpreted() -> bool:
    # triton.jit picks the interpreter when the kernel is *defined* (module import), so what
    # matters is the environment at import time, not now.
    return type(_box_branch_linear_kernel).__name__ == "InterpretedFunction"


def box_branch_reasons(b: torch.Tensor, k: torch.Tensor | None = None,
                       v: torch.Tensor | None = None) -> list[str]:
    """Why these Triton kernels cannot run on tensors like (b, k, v) here (empty list: they can):
    fasttrack.ops.limits.TRITON for box_branch (float16, bfloat16, float32, float64; one device),
    the device the kernels were imported for (CUDA, or the CPU interpreter under
    TRITON_INTERPRET=1) and the interpreter's missing 16-bit math."""
    interp = _kernel_is_interpreted()
    hint = (" (the kernels were imported under TRITON_INTERPRET=1: CPU interpreter only)" if interp
            else " (CPU tensors need TRITON_INTERPRET=1 set before fasttrack.kernels.box_branch "
                 "is imported)")
    out = _LIMITS.reasons("box_branch", (b, k, v), devices=("cpu",) if interp else ("cuda",),
                          device_hint=hint)
    if b.device.type == "cpu" and b.dtype in (torch.float16, torch.bfloat16):
        out.append("the Triton interpreter has no 16-bit float math")
    return out


def workspace_size(nq: int, dim: int, hidden: int, noise_hidden: int) -> int:
    """Workspace elements per target: LN output, q, attention, b', b'' (nq x dim each) and both
    hidden rows (nq x hidden, nq x noise_hidden)."""
    return nq * (5 * dim + hidden + noise_hidden)


def _aligned(tensors, ints) -> bool:
    """The ALIGNED constexpr: every base pointer 16-byte aligned and every size / stride a
    multiple of 16 elements."""
    return all(t.data_ptr() % 16 == 0 for t in tensors) and all(i % 16 == 0 for i in ints)


def _check_pow2(name: str, val: int) -> None:
    if val < 1 or val & (val - 1):
        raise ValueError(f"{name} must be a power of two, got {val}")


def box_branch_fwd(b: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   weights: Sequence[torch.Tensor], eps: tuple[float, float] = (1e-6, 1e-6),
                   out: torch.Tensor | None = None, block_n: int | None = None,
                   block_k: int | None = None, block_s: int | None = None,
                   block_m: int | None = None) -> torch.Tensor:
    """Fused box branch (module docstring). b (B, Nq, C); k, v (B, H, Ns, D), C = H * D;
    weights: the 16 tensors of WEIGHT_NAMES (LayerNorm (C,), q/proj (C, C), fc1 (HID, C), fc2
    (C, HID), noise1 (NPH, C), noise2 (C, NPH), biases (out,)); eps: (LN1, LN2) epsilons.
    block_n / block_k / block_m (linear tiles) and block_s (attention key step) override
    box_branch_config, for tests (powers of two; block_n, block_m, block_k >= 16).
    Returns out (B, Nq, C) in b's dtype (written into `out` when given)."""
    reasons = box_branch_reasons(b, k, v)
    if reasons:
        raise ValueError("box_branch_fwd cannot run on b: " + "; ".join(reasons))
    if b.dim() != 3 or k.dim() != 4 or v.dim() != 4 or k.shape != v.shape:
        raise ValueError(f"b must be (B, Nq, C) and k, v (B, H, Ns, D) alike, got b {tuple(b.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    B, nq, C = b.shape
    _, H, ns, D = k.shape
    if k.shape[0] != B or H * D != C or ns < 1 or nq < 1:
        raise ValueError(f"k must be (B={B}, H, Ns>=1, D) with H * D = C = {C}, got {tuple(k.shape)}")
    if k.dtype != b.dtype or v.dtype != b.dtype or k.device != b.device or v.device != b.device:
        raise TypeError("b, k, v must share dtype and device")
    if len(weights) != len(WEIGHT_NAMES):
        raise ValueError(f"weights must hold {len(WEIGHT_NAMES)} tensors ({', '.join(WEIGHT_NAMES)})")
    ws_ = [w.contiguous() for w in weights]
    hid, nph = ws_[8].shape[0], ws_[12].shape[0]
    want = [(C,), (C,), (C, C), (C,), (C, C), (C,), (C,), (C,), (hid, C), (hid,), (C, hid), (C,),
            (nph, C), (nph,), (C, nph), (C,)]
    for name, w, shape in zip(WEIGHT_NAMES, ws_, want):
        if tuple(w.shape) != shape or w.device != b.device:
            raise ValueError(f"weights[{name}] must have shape {shape} on {b.device}, got "
                             f"{tuple(w.shape)} on {w.device}")
    if any(w.dtype != b.dtype for w in ws_):
        # The dots take both operands in one dtype: the weights are the input dtype's tile.
        ws_ = [w.to(b.dtype) for w in ws_]
    if b.stride(-1) != 1 or (C % 16 == 0 and not _aligned((b,), b.stride()[:2])):
        # proj's epilogue reads b as its residual: a fresh contiguous copy (B * Nq * C values)
        # keeps that launch on the OUT_ALIGNED variant (an unaligned 64-row epilogue spills).
        b = b.clone(memory_format=torch.contiguous_format)
    if out is None:
        out = torch.empty((B, nq, C), dtype=b.dtype, device=b.device)
    elif tuple(out.shape) != (B, nq, C) or out.dtype != b.dtype or out.stride(-1) != 1:
        raise ValueError(f"out must be a (B, Nq, C) = {(B, nq, C)} tensor of dtype {b.dtype} with "
                         "unit last stride")
    if B == 0:
        return out
    M = B * nq
    if M >= 2**31 or max(C, hid, nph) >= 2**31:
        raise ValueError(f"B * Nq = {M} rows or a layer width is >= 2^31")
    cfg = box_branch_config(M, nq, D, b.dtype, interpret=b.device.type == "cpu")
    bm = block_m or cfg.block_m
    bn = block_n or cfg.block_n
    bk = block_k or cfg.block_k
    bs = block_s or cfg.block_s
    for name, val in (("block_m", bm), ("block_n", bn), ("block_k", bk), ("block_s", bs)):
        _check_pow2(name, val)
        if val < 16:
            raise ValueError(f"{name} must be >= 16 (tl.dot), got {val}")
    if H > _MAX_GRID_YZ or triton.cdiv(max(C, hid, nph), bn) > _MAX_GRID_YZ:
        raise ValueError(f"H = {H} heads or a layer of {max(C, hid, nph)} columns / {bn} exceeds "
                         f"the CUDA grid limit {_MAX_GRID_YZ} on grid axis 1")

    acc_dtype = torch.float64 if b.dtype == torch.float64 else torch.float32
    work = torch.empty(M * (5 * C + hid + nph), dtype=acc_dtype, device=b.device)
    xn, q, attn, b1, b2 = (work[i * M * C:(i + 1) * M * C] for i in range(5))
    hidden = work[5 * M * C:5 * M * C + M * hid]
    nhid = work[5 * M * C + M * hid:]
    ACC, prec = _tl_acc(b.dtype), _precision(b.dtype)
    ln1_w, ln1_b, wq, bq, wo, bo, ln2_w, ln2_b, w1, c1, w2, c2, wn1, n1, wn2, n2 = ws_
    row_blocks = triton.cdiv(M, bm)

    def layernorm(x, sx0, sx1, gamma, beta, eps_):
        _box_branch_layernorm_kernel[(triton.cdiv(M, cfg.ln_block_m),)](
            x, xn, gamma, beta, M, C, nq, sx0, sx1, float(eps_),
            BLOCK_M=cfg.ln_block_m, BLOCK_C=cfg.ln_block_c, ACC=ACC, num_warps=cfg.ln_warps,
            num_stages=cfg.ln_stages)

    def linear(x, kdim, w, bias, y, n, act=ACT_NONE, res=RES_NONE, r=None,
               x_strides=None, r_strides=None, y_strides=None):
        # Workspace rows of width n (or kdim) are (B, Nq, width) row-contiguous.
        sx = x_strides or (nq * kdim, kdim)
        sy = y_strides or (nq * n, n)
        sr = r_strides or (nq * n, n)
        r = y if r is None else r
        _box_branch_linear_kernel[(row_blocks, triton.cdiv(n, bn))](
            x, w, bias, r, y, M, n, kdim, nq,
            sx[0], sx[1], sr[0], sr[1], sy[0], sy[1],
            ACT=act, RES=res, BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=bk,
            ALIGNED=_aligned((x, w), (kdim,) + sx), OUT_ALIGNED=_aligned((r, y), sr + sy + (n,)),
            PRECISION=prec, ACC=ACC, num_warps=cfg.num_warps, num_stages=cfg.num_stages)

    b_strides = (b.stride(0), b.stride(1))
    layernorm(b, *b_strides, ln1_w, ln1_b, eps[0])
    linear(xn, C, wq, bq, q, C)
    _box_branch_attention_kernel[(B, H)](
        q, k, v, attn, nq, ns, C, D,
        k.stride(0), k.stride(1), k.stride(2), k.stride(3),
        v.stride(0), v.stride(1), v.stride(2), v.stride(3),
        BLOCK_Q=cfg.block_q, BLOCK_S=bs, BLOCK_D=cfg.block_d,
        ALIGNED=k.stride(3) == 1 and v.stride(3) == 1 and _aligned(
            (q, k, v, attn), (C, D) + k.stride()[:3] + v.stride()[:3]),
        PRECISION=prec, ACC=ACC,
        num_warps=cfg.attn_warps, num_stages=cfg.attn_stages)
    linear(attn, C, wo, bo, b1, C, res=RES_ADD, r=b, r_strides=b_strides)
    layernorm(b1, nq * C, C, ln2_w, ln2_b, eps[1])
    linear(xn, C, w1, c1, hidden, hid, act=ACT_GELU)
    linear(hidden, hid, w2, c2, b2, C, res=RES_ADD, r=b1)
    linear(b2, C, wn1, n1, nhid, nph, act=ACT_RELU)
    # noise2's epilogue writes out: an unaligned view is written through a contiguous buffer.
    res = out if C % 16 or _aligned((out,), out.stride()[:2]) else torch.empty_like(b)
    linear(nhid, nph, wn2, n2, res, C, res=RES_SUB, r=b2,
           y_strides=(res.stride(0), res.stride(1)))
    if res is not out:
        out.copy_(res)
    return out


# Triton signature types of the launcher's pointer arguments, per input dtype.
_TT = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32"}


def aot_specs(arch: int, dim: int = 768, heads: int = 12, hidden: int = 3072,
              noise_hidden: int = 768, nq: int = 4) -> list[KernelSpec]:
    """Every kernel variant box_branch_fwd selects on a GPU of compute capability `arch` (80,
    89, 90) for float16, bfloat16, float32 inputs at C = dim, H = heads (D = dim / heads),
    HID = hidden, NPH = noise_hidden, Nq = nq: the linear kernel for each (epilogue, operand
    types) of its six launches and each row block (block_m = 16, 32, 64, picked by the row
    count B * Nq), the LayerNorm kernel for its two inputs (b, the b' workspace) and the
    attention kernel, per dtype. Block sizes come from box_branch_config, as in the launcher.
    The widths are runtime arguments; they select only block_d (from D) and the ALIGNED /
    OUT_ALIGNED constexprs (widths that are multiples of 16, as at ViT-B: the launcher copies an
    unaligned b and writes an unaligned out through a buffer, so the caller's views never
    select them). Those two constexprs stand in for the divisibility-by-16 specialization the
    launcher's JIT does on integer arguments, which the "i32" signature here cannot express.
    The tiles are the same on every arch today."""
    del arch  # same tiles on every arch
    d = dim // heads
    # K of each linear launch, and its output width N.
    widths = {"q": (dim, dim), "proj": (dim, dim), "fc1": (dim, hidden), "fc2": (hidden, dim),
              "noise1": (dim, noise_hidden), "noise2": (noise_hidden, dim)}
    ints = ("M", "N", "K", "RPB", "stride_x0", "stride_x1", "stride_r0", "stride_r1",
            "stride_y0", "stride_y1")
    specs = []
    for dtype, tt in _TT.items():
        acc, prec = _tl_acc(dtype), _precision(dtype)
        # (label, ACT, RES, X, R, Y) of the six linear launches: X, R, Y are the fp32
        # workspace ("ws") or an input-dtype tensor ("in"); launches without a residual pass
        # Y as R.
        launches = (("q", ACT_NONE, RES_NONE, "ws", "ws", "ws"),
                    ("proj", ACT_NONE, RES_ADD, "ws", "in", "ws"),
                    ("fc1", ACT_GELU, RES_NONE, "ws", "ws", "ws"),
                    ("fc2", ACT_NONE, RES_ADD, "ws", "ws", "ws"),
                    ("noise1", ACT_RELU, RES_NONE, "ws", "ws", "ws"),
                    ("noise2", ACT_NONE, RES_SUB, "ws", "ws", "in"))
        for rows in (16, 32, 64):  # row counts B * Nq that select block_m = 16, 32, 64
            cfg = box_branch_config(rows, nq, d, dtype, interpret=False)
            ce_base = dict(BLOCK_N=cfg.block_n, BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k,
                           PRECISION=prec, ACC=acc)
            variants: dict = {}  # float32: proj and fc2 compile to the same variant
            for label, act, res, x, r, y in launches:
                ptr = {"ws": "*fp32", "in": tt}
                sig = {"X": ptr[x], "W": tt, "BIAS": tt, "R": ptr[r], "Y": ptr[y]}
                sig.update({n: "i32" for n in ints})
                kdim, n = widths[label]
                # As box_branch_fwd's _aligned: X strides are multiples of K, R / Y of N or C.
                aligned, out_aligned = kdim % 16 == 0, n % 16 == 0 and dim % 16 == 0
                key = (act, res, aligned, out_aligned, tuple(sig.items()))
                variants.setdefault(key, []).append(label)
            for (act, res, aligned, out_aligned, sig), labels in variants.items():
                specs.append(KernelSpec(
                    _box_branch_linear_kernel, dtype, dict(sig),
                    dict(ce_base, ACT=act, RES=res, ALIGNED=aligned, OUT_ALIGNED=out_aligned),
                    cfg.num_warps,
                    cfg.num_stages, f"linear {'/'.join(labels)} block_m={cfg.block_m}"))
        cfg = box_branch_config(16, nq, d, dtype, interpret=False)
        ln_ce = dict(BLOCK_M=cfg.ln_block_m, BLOCK_C=cfg.ln_block_c, ACC=acc)
        for label, x in (("LN1 (b)", tt), ("LN2 (b' workspace)", "*fp32")):
            if label.startswith("LN2") and x == tt:
                continue  # float32: the same variant as LN1
            ln_sig = {"X": x, "Y": "*fp32", "GAMMA": tt, "BETA": tt, "M": "i32", "C": "i32",
                      "RPB": "i32", "stride_x0": "i32", "stride_x1": "i32", "eps": "fp32"}
            specs.append(KernelSpec(_box_branch_layernorm_kernel, dtype, ln_sig, ln_ce,
                                    cfg.ln_warps, cfg.ln_stages, "layernorm " + label))
        at_sig = {"Q": "*fp32", "K": tt, "V": tt, "O": "*fp32", "NQ": "i32", "NS": "i32",
                  "C": "i32", "D": "i32"}
        at_sig.update({n: "i32" for n in ("stride_kb", "stride_kh", "stride_kn", "stride_kd",
                                          "stride_vb", "stride_vh", "stride_vn", "stride_vd")})
        # Unaligned: K / V views without unit head-dim stride (read in place, not copied).
        for aligned in (True, False) if dim % 16 == 0 and d % 16 == 0 else (False,):
            at_ce = dict(BLOCK_Q=cfg.block_q, BLOCK_S=cfg.block_s, BLOCK_D=cfg.block_d,
                         ALIGNED=aligned, PRECISION=prec, ACC=acc)
            specs.append(KernelSpec(_box_branch_attention_kernel, dtype, at_sig, at_ce,
                                    cfg.attn_warps, cfg.attn_stages,
                                    f"attention D={d}" + ("" if aligned else " unaligned")))
    return specs
