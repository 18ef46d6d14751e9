"""Fused DeTrack box branch: one launch per denoising block, batched over targets.

Computes, for every target t (DESIGN.md 1.4; reference: fasttrack.trackers.detrack.box_branch):

    b'  = b + Wo Attn(Wq LN1(b) + bq, K_x, V_x) + bo
    b'' = b' + W2 GELU(W1 LN2(b') + c1) + c2
    out = b'' - (Wn2 ReLU(Wn1 b'' + n1) + n2)

Shapes: b (B, Nq, C) (Nq = 4 box tokens), k, v (B, H, Ns, D) with C = H * D, any strides (the
visual block's K/V of the search tokens are strided views of its qkv tensor and are read in
place); out (B, Nq, C) in b's dtype. Weights in nn.Linear layout (out, in), contiguous.

Design: one program per target. The box branch is 4 rows pushed through a chain of six
matrix products whose widths (C, 4C, ...) are far larger than its rows, so every stage is a
GEMV-like stream over the weights; the chain needs every column of one stage before the next
starts, which a single program gets from a CTA barrier (tl.debug_barrier = __syncthreads, which
also makes the program's global writes visible to all its threads). Intermediate rows (attention
output, b', FFN hidden, b'', NoisePred hidden: Nq * (3C + 4C + C) values) go to a small per-target
fp32 workspace that stays in L1/L2; register tensors cannot be sliced per chunk, so staging
through memory is what lets each stage stream its weights in (BLOCK_N x BLOCK_K) tiles.
LayerNorm is fused into the matmul that follows it: the row mean / rstd are two cheap passes
over Nq rows, and each loaded (Nq, BLOCK_K) chunk is normalized on the fly, so LN1(b) and
LN2(b') are never written. Attention loops over heads; per head the 4 queries stream the keys in
BLOCK_S tiles with the online softmax of FlashAttention (no (Nq, Ns) score tensor).

Block sizes: BLOCK_Q = next_pow2(Nq) (4). On a GPU BLOCK_N = 32 output columns by BLOCK_K = 64
reduction elements per weight tile (a 256-byte fp32 row segment per column: coalesced), so the
broadcast product (BLOCK_Q, BLOCK_N, BLOCK_K) is 8192 fp32 values over 4 warps; BLOCK_S = 32
keys by BLOCK_D = next_pow2(D) (64 for ViT-B) keeps the score/PV products at the same size.
The products are broadcast-multiply-sums, not tl.dot: with 4 rows each weight is used 4 times,
the stage is bound by the weight stream, and tl.dot would pad the rows to 16. Under the
interpreter (TRITON_INTERPRET=1, CPU tensors) every tile is a numpy op with a fixed Python cost,
so the defaults are 64 x 64 tiles and 32 keys (3x faster than 32 x 32 at C = 64); the tests pass
16 / 32 tiles so that odd sizes (C = 48, Ns = 37) exercise the masked last tile of every loop.
Accumulation is float32 (float64 for float64 inputs, used by the exactness tests).
Cost model: at batch 1 one program streams 12 C^2 weights per block (one SM's bandwidth); many
targets run as many programs that share those weights through L2.
"""
from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

__all__ = ["box_branch_fwd", "box_branch_reasons", "WEIGHT_NAMES", "workspace_size"]

# Order of the 16 weight tensors the launcher takes (names of the reference BoxBranch module).
WEIGHT_NAMES = ("norm1.weight", "norm1.bias", "q.weight", "q.bias", "proj.weight", "proj.bias",
                "norm2.weight", "norm2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                "noise1.weight", "noise1.bias", "noise2.weight", "noise2.bias")

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@triton.jit
def _ln_stats(x_ptr, row_stride, NQ, C, eps,
              BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """Row mean and 1/sqrt(var + eps) of an (NQ, C) row block. Two passes (mean, then centred
    squares) instead of E[x^2] - E[x]^2, which cancels badly when |mean| >> std."""
    rows = tl.arange(0, BLOCK_Q)
    rmask = rows < NQ
    s1 = tl.zeros([BLOCK_Q], ACC)
    for k0 in range(0, C, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        m = rmask[:, None] & (ks[None, :] < C)
        x = tl.load(x_ptr + rows[:, None] * row_stride + ks[None, :], mask=m, other=0.0).to(ACC)
        s1 += tl.sum(x, 1)
    mean = s1 / C
    s2 = tl.zeros([BLOCK_Q], ACC)
    for k0 in range(0, C, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        m = rmask[:, None] & (ks[None, :] < C)
        x = tl.load(x_ptr + rows[:, None] * row_stride + ks[None, :], mask=m, other=0.0).to(ACC)
        d = tl.where(m, x - mean[:, None], 0.0)
        s2 += tl.sum(d * d, 1)
    rstd = 1.0 / tl.sqrt(s2 / C + eps)
    return mean, rstd


@triton.jit
def _rows_linear(x_ptr, x_row_stride, K, w_ptr, bias_ptr, n0, N, NQ, mean, rstd, lnw_ptr, lnb_ptr,
                 APPLY_LN: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
                 BLOCK_K: tl.constexpr, ACC: tl.constexpr):
    """Columns n0 .. n0 + BLOCK_N of x @ W^T + bias for the NQ rows of x (row stride
    x_row_stride, unit column stride), W (N, K) contiguous; with APPLY_LN the rows are layer-
    normalized chunk by chunk (mean, rstd from _ln_stats; gamma, beta at lnw_ptr, lnb_ptr).
    Returns (BLOCK_Q, BLOCK_N) in ACC. Padded rows (>= NQ) hold finite garbage and are never
    stored; padded columns / reduction elements load as 0 and contribute nothing."""
    rows = tl.arange(0, BLOCK_Q)
    rmask = rows < NQ
    cols = n0 + tl.arange(0, BLOCK_N)
    cmask = cols < N
    acc = tl.zeros([BLOCK_Q, BLOCK_N], ACC)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        kmask = ks < K
        x = tl.load(x_ptr + rows[:, None] * x_row_stride + ks[None, :],
                    mask=rmask[:, None] & kmask[None, :], other=0.0).to(ACC)
        if APPLY_LN:
            g = tl.load(lnw_ptr + ks, mask=kmask, other=0.0).to(ACC)
            beta = tl.load(lnb_ptr + ks, mask=kmask, other=0.0).to(ACC)
            x = (x - mean[:, None]) * rstd[:, None] * g[None, :] + beta[None, :]
        w = tl.load(w_ptr + cols[:, None] * K + ks[None, :],
                    mask=cmask[:, None] & kmask[None, :], other=0.0).to(ACC)
        acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
    bias = tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(ACC)
    return acc + bias[None, :]


@triton.jit
def _box_branch_fwd_kernel(
    B_ptr, K_ptr, V_ptr, OUT_ptr, WS_ptr,
    ln1_w, ln1_b, wq, bq, wo, bo, ln2_w, ln2_b, w1, c1, w2, c2, wn1, n1, wn2, n2,
    stride_bb, stride_bq, stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd, stride_ob, stride_oq, ws_stride,
    NQ, NS, C, H, D, HID, NPH, eps1, eps2,
    BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr, ACC: tl.constexpr,
):
    """One program = one target: the whole box branch of one block (see module docstring).
    Workspace rows per target: attn (NQ, C) | b' (NQ, C) | b'' (NQ, C) | FFN hidden (NQ, HID) |
    NoisePred hidden (NQ, NPH), all row-contiguous in ACC."""
    pid = tl.program_id(0).to(tl.int64)
    x_ptr = B_ptr + pid * stride_bb
    o_ptr = OUT_ptr + pid * stride_ob
    ws = WS_ptr + pid * ws_stride
    attn_ws = ws
    b1_ws = ws + NQ * C
    b2_ws = ws + 2 * NQ * C
    hid_ws = ws + 3 * NQ * C
    np_ws = hid_ws + NQ * HID
    rows = tl.arange(0, BLOCK_Q)
    rmask = rows < NQ
    offs_d = tl.arange(0, BLOCK_D)
    dmask = offs_d < D
    # 1/sqrt(D) computed in ACC so float64 runs are exact to float64 rounding.
    scale = 1.0 / tl.sqrt(tl.full([1], D, ACC))

    mean1, rstd1 = _ln_stats(x_ptr, stride_bq, NQ, C, eps1, BLOCK_Q, BLOCK_K, ACC)
    for h in range(0, H):
        q = _rows_linear(x_ptr, stride_bq, C, wq + h * D * C, bq + h * D, 0, D, NQ, mean1, rstd1,
                         ln1_w, ln1_b, True, BLOCK_Q, BLOCK_D, BLOCK_K, ACC) * scale
        k_base = K_ptr + pid * stride_kb + h * stride_kh
        v_base = V_ptr + pid * stride_vb + h * stride_vh
        # Every key tile holds at least one valid key (NS >= 1), so m_i is finite after the first
        # tile and exp(m_old - m_new) = exp(-inf) = 0 there: no NaN from masked keys.
        m_i = tl.full([BLOCK_Q], float("-inf"), ACC)
        l_i = tl.zeros([BLOCK_Q], ACC)
        acc = tl.zeros([BLOCK_Q, BLOCK_D], ACC)
        for s0 in range(0, NS, BLOCK_S):
            offs_s = s0 + tl.arange(0, BLOCK_S)
            smask = offs_s < NS
            kv_mask = smask[:, None] & dmask[None, :]
            kt = tl.load(k_base + offs_s[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                         mask=kv_mask, other=0.0).to(ACC)
            s = tl.sum(q[:, None, :] * kt[None, :, :], axis=2)
            s = tl.where(smask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            vt = tl.load(v_base + offs_s[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                         mask=kv_mask, other=0.0).to(ACC)
            acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * vt[None, :, :], axis=1)
            m_i = m_new
        o = acc / l_i[:, None]
        tl.store(attn_ws + rows[:, None] * C + h * D + offs_d[None, :], o,
                 mask=rmask[:, None] & dmask[None, :])
    tl.debug_barrier()

    # b' = b + attn Wo^T + bo
    for n0 in range(0, C, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        m = rmask[:, None] & (cols[None, :] < C)
        y = _rows_linear(attn_ws, C, C, wo, bo, n0, C, NQ, mean1, rstd1, ln1_w, ln1_b, False,
                         BLOCK_Q, BLOCK_N, BLOCK_K, ACC)
        res = tl.load(x_ptr + rows[:, None] * stride_bq + cols[None, :], mask=m, other=0.0).to(ACC)
        tl.store(b1_ws + rows[:, None] * C + cols[None, :], y + res, mask=m)
    tl.debug_barrier()

    # FFN hidden = GELU(LN2(b') W1^T + c1), exact (erf) GELU as torch's default
    mean2, rstd2 = _ln_stats(b1_ws, C, NQ, C, eps2, BLOCK_Q, BLOCK_K, ACC)
    for n0 in range(0, HID, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        y = _rows_linear(b1_ws, C, C, w1, c1, n0, HID, NQ, mean2, rstd2, ln2_w, ln2_b, True,
                         BLOCK_Q, BLOCK_N, BLOCK_K, ACC)
        y = 0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))
        tl.store(hid_ws + rows[:, None] * HID + cols[None, :], y,
                 mask=rmask[:, None] & (cols[None, :] < HID))
    tl.debug_barrier()

    # b'' = b' + hidden W2^T + c2
    for n0 in range(0, C, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        m = rmask[:, None] & (cols[None, :] < C)
        y = _rows_linear(hid_ws, HID, HID, w2, c2, n0, C, NQ, mean2, rstd2, ln2_w, ln2_b, False,
                         BLOCK_Q, BLOCK_N, BLOCK_K, ACC)
        res = tl.load(b1_ws + rows[:, None] * C + cols[None, :], mask=m, other=0.0)
        tl.store(b2_ws + rows[:, None] * C + cols[None, :], y + res, mask=m)
    tl.debug_barrier()

    # NoisePred hidden = ReLU(b'' Wn1^T + n1)
    for n0 in range(0, NPH, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        y = _rows_linear(b2_ws, C, C, wn1, n1, n0, NPH, NQ, mean2, rstd2, ln2_w, ln2_b, False,
                         BLOCK_Q, BLOCK_N, BLOCK_K, ACC)
        tl.store(np_ws + rows[:, None] * NPH + cols[None, :], tl.maximum(y, 0.0),
                 mask=rmask[:, None] & (cols[None, :] < NPH))
    tl.debug_barrier()

    # out = b'' - (hidden Wn2^T + n2)
    for n0 in range(0, C, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        m = rmask[:, None] & (cols[None, :] < C)
        eps_hat = _rows_linear(np_ws, NPH, NPH, wn2, n2, n0, C, NQ, mean2, rstd2, ln2_w, ln2_b,
                               False, BLOCK_Q, BLOCK_N, BLOCK_K, ACC)
        b2v = tl.load(b2_ws + rows[:, None] * C + cols[None, :], mask=m, other=0.0)
        tl.store(o_ptr + rows[:, None] * stride_oq + cols[None, :],
                 (b2v - eps_hat).to(OUT_ptr.dtype.element_ty), mask=m)


def _kernel_is_interpreted() -> bool:
    # triton.jit picks the interpreter when the kernel is *defined* (module import), so what
    # matters is the environment at import time, not now.
    return type(_box_branch_fwd_kernel).__name__ == "InterpretedFunction"


def box_branch_reasons(b: torch.Tensor) -> list[str]:
    """Why this Triton kernel cannot run on tensors like `b` here (empty list: it can)."""
    out = []
    if b.dtype not in _DTYPES:
        out.append(f"dtype {b.dtype} is not one of float16, bfloat16, float32, float64")
    if b.device.type == "cpu" and not _kernel_is_interpreted():
        out.append("CPU tensors need TRITON_INTERPRET=1 set before fasttrack.kernels.box_branch "
                   "is imported")
    if b.device.type == "cuda" and _kernel_is_interpreted():
        out.append("the kernel was imported under TRITON_INTERPRET=1 (CPU interpreter only)")
    if b.device.type == "cpu" and b.dtype in (torch.float16, torch.bfloat16):
        out.append("the Triton interpreter has no 16-bit float math")
    if b.device.type not in ("cpu", "cuda"):
        out.append(f"device {b.device} is neither cuda nor cpu")
    return out


def workspace_size(nq: int, dim: int, hidden: int, noise_hidden: int) -> int:
    """Workspace elements per target: attn, b', b'' (nq x dim each), both hidden rows."""
    return nq * (3 * dim + hidden + noise_hidden)


def box_branch_fwd(b: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   weights: Sequence[torch.Tensor], eps: tuple[float, float] = (1e-6, 1e-6),
                   out: torch.Tensor | None = None, block_n: int | None = None,
                   block_k: int | None = None, block_s: int | None = None) -> torch.Tensor:
    """Fused box branch (module docstring). b (B, Nq, C); k, v (B, H, Ns, D), C = H * D;
    weights: the 16 tensors of WEIGHT_NAMES (LayerNorm (C,), q/proj (C, C), fc1 (HID, C), fc2
    (C, HID), noise1 (NPH, C), noise2 (C, NPH), biases (out,)); eps: (LN1, LN2) epsilons.
    Returns out (B, Nq, C) in b's dtype (written into `out` when given)."""
    reasons = box_branch_reasons(b)
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
    if b.stride(-1) != 1:
        b = b.contiguous()
    if out is None:
        out = torch.empty((B, nq, C), dtype=b.dtype, device=b.device)
    elif tuple(out.shape) != (B, nq, C) or out.dtype != b.dtype or out.stride(-1) != 1:
        raise ValueError(f"out must be a (B, Nq, C) = {(B, nq, C)} tensor of dtype {b.dtype} with "
                         "unit last stride")
    if B == 0:
        return out
    acc_dtype = torch.float64 if b.dtype == torch.float64 else torch.float32
    ws_stride = workspace_size(nq, C, hid, nph)
    work = torch.empty((B, ws_stride), dtype=acc_dtype, device=b.device)
    interp = b.device.type == "cpu"
    bn = block_n or (64 if interp else 32)
    bk = block_k or 64
    bs = block_s or 32
    for name, val in (("block_n", bn), ("block_k", bk), ("block_s", bs)):
        if val < 1 or val & (val - 1):
            raise ValueError(f"{name} must be a power of two, got {val}")
    _box_branch_fwd_kernel[(B,)](
        b, k, v, out, work, *ws_,
        b.stride(0), b.stride(1), k.stride(0), k.stride(1), k.stride(2), k.stride(3),
        v.stride(0), v.stride(1), v.stride(2), v.stride(3), out.stride(0), out.stride(1), ws_stride,
        nq, ns, C, H, D, hid, nph, float(eps[0]), float(eps[1]),
        BLOCK_Q=triton.next_power_of_2(nq), BLOCK_N=bn, BLOCK_K=bk,
        BLOCK_D=triton.next_power_of_2(D), BLOCK_S=bs,
        ACC=tl.float64 if acc_dtype == torch.float64 else tl.float32,
        num_warps=4,
    )
    return out
