"""Self x cross product M' = S^T C of DESIGN.md 1.1 without forming S, and its backward (1.3).

Shapes: q (B, H, Nq, D), k (B, H, Nk, D), cross C (B, Nq, T), lse L (B, H, Nq) float32,
out / dout G (B, Nk, T). S = (1/H) sum_h P_h with P_h = exp(s Q_h K_h^T - L_h) (Nq, Nk);
every kernel recomputes P tile by tile from (q, k, L).
UNVERIFIED ON A GPU in its current form (16-byte-aligned C / G rows, one-pass dQ + dK backward,
the head-outer variant): run only under TRITON_INTERPRET=1 and compiled ahead of time for
sm_80/90 (kernels/compile_report.py). The earlier form passed every GPU test on an H200 (sm_90,
triton 3.6; benchmarks/results/gpu-h200-2026-12-04/).
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ._common import (AOT_HEAD_DIMS, AOT_TOKENS, LOG2E, MAX_TOKENS, SUPPORTED_DTYPES, KernelSpec,
                      check_grid, check_tensor, device_arch, dot_precision, launch, load_tile,
                      ptr, sm_count)
from ._common import (as_contiguous, cdiv, device_facts, fast_inputs_ok, next_pow2, pad, padded_rows,
                      query_splits, row_stride, self_cross_config, token_block)
from .attention import _check_qk
from .attention import fwd_plan as attention_fwd_plan
from .attention import launch_fwd as attention_launch_fwd


@triton.jit
def _self_cross_fwd_kernel(
    Q, K, C, LSE, OUT, scale, p_scale, H, Nq, Nk, n_split, m_blocks_per_split,
    D: tl.constexpr, T: tl.constexpr, CS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_T: tl.constexpr, HEAD_OUTER: tl.constexpr, PREC: tl.constexpr, PREC_C: tl.constexpr,
):
    """out[j, t] = (1/H) sum_i (sum_h exp(s q_i^h.k_j^h - L_h[i])) C[i, t] (DESIGN.md 1.1):
    the dV = P^T dO pass of FlashAttention-2 with dO := C, summed over heads.

    One (key block, token block, batch x query split) per program. For each query block the
    head probabilities are summed in fp32 first, S^T tile = sum_h P_h^T, and only that sum
    meets C in a tensor-core product: H times fewer P C flops than a product per head (2.5x
    fewer in total at H=10, D=64, T=77). The sum is multiplied by p_scale before the cast to
    C's dtype and divided out at the end: at N >= 16k a probability is ~1/N, deep in fp16's
    subnormal range (< 6.1e-5), where it would lose its mantissa; p_scale = 2^k with
    H * 2^k < 65504 keeps every summed entry normal. With n_split > 1 each program covers
    m_blocks_per_split query blocks and writes a partial sum to OUT[split], which the launcher
    reduces in a fixed order (deterministic, no atomics).

    C's rows are CS >= T elements apart, CS a multiple of 16 bytes (the launcher pads C with
    zero columns, see padded_rows): each C tile is then 16-byte vector loads, where the 77-token
    rows (154 bytes) came in as scalar 2-byte loads.

    HEAD_OUTER (a variant for the GPU lab to weigh, off by default): heads in the outer loop, so
    each head's K tile is loaded once per program and stays in registers (FA2's dV pass) while
    the query blocks stream past; the price is one P_h^T C product per head instead of one per
    head sum (H times the P C flops: 1.8x the tensor-core work at H=5, D=64, T=77)."""
    pid_n = tl.program_id(0)
    pid_t = tl.program_id(1)
    pid_bs = tl.program_id(2)
    b = (pid_bs // n_split).to(tl.int64)
    split = pid_bs % n_split
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    mask_n = offs_n < Nk
    mask_t = offs_t < T
    mask_d = offs_d < D
    qk_scale = scale * LOG2E
    acc = tl.zeros([BLOCK_N, BLOCK_T], tl.float32)
    m_begin = split * m_blocks_per_split * BLOCK_M
    m_end = tl.minimum(m_begin + m_blocks_per_split * BLOCK_M, Nq)
    # Padded query columns hold finite garbage (q = 0, L = 0: entries <= H) that meets zero rows
    # of C; padded key rows are never stored. No mask needed on either.
    if HEAD_OUTER:
        for h in range(H):
            bh = b * H + h
            k = load_tile(K + bh * Nk * D, offs_n, offs_d, mask_n, mask_d, D)
            for start_m in range(m_begin, m_end, BLOCK_M):
                offs_m = start_m + tl.arange(0, BLOCK_M)
                mask_m = offs_m < Nq
                q = load_tile(Q + bh * Nq * D, offs_m, offs_d, mask_m, mask_d, D)
                lse2 = tl.load(LSE + bh * Nq + offs_m, mask=mask_m, other=0.0) * LOG2E
                p_t = tl.exp2(tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale - lse2[None, :])
                c = load_tile(C + b * Nq * CS, offs_m, offs_t, mask_m, offs_t < CS, CS)
                acc += tl.dot((p_t * p_scale).to(c.dtype), c, input_precision=PREC_C)
    else:
        for start_m in range(m_begin, m_end, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            mask_m = offs_m < Nq
            p_t = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
            for h in range(H):
                bh = b * H + h
                k = load_tile(K + bh * Nk * D, offs_n, offs_d, mask_n, mask_d, D)
                q = load_tile(Q + bh * Nq * D, offs_m, offs_d, mask_m, mask_d, D)
                lse2 = tl.load(LSE + bh * Nq + offs_m, mask=mask_m, other=0.0) * LOG2E
                s_t = tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale
                p_t += tl.exp2(s_t - lse2[None, :])
            c = load_tile(C + b * Nq * CS, offs_m, offs_t, mask_m, offs_t < CS, CS)
            acc += tl.dot((p_t * p_scale).to(c.dtype), c, input_precision=PREC_C)
    acc = acc / (p_scale * H)
    n_batch = tl.num_programs(2) // n_split
    base = OUT + (split * n_batch + b) * Nk * T  # OUT is (n_split, B, Nk, T)
    tl.store(base + offs_n[:, None] * T + offs_t[None, :], acc.to(OUT.dtype.element_ty),
             mask=mask_n[:, None] & mask_t[None, :])


@triton.jit
def _self_cross_bwd_preprocess_kernel(
    Q, K, C, G, LSE, DCROSS, DELTA, scale, p_scale, H, Nq, Nk,
    D: tl.constexpr, T: tl.constexpr, CS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, PREC: tl.constexpr, PREC_C: tl.constexpr,
):
    """Row terms of the backward (DESIGN.md 1.3) with the heads looped inside, so that the
    head-independent C G^T is formed once per (query block, key block) tile:
      delta_h[i] = (1/H) sum_j P_h[i, j] (C G^T)[i, j]  (= (1/H) sum_t C[i, t] (P_h G)[i, t]:
                   FA2's rowsum(dO * O) with dO := C / H, O := P_h G),
      dcross[i, t] = (1/H) sum_j (sum_h P_h[i, j]) G[j, t]  (head-summed P meets G once).
    One (query block, batch) per program. Heads go in chunks of BLOCK_H whose delta rows live
    in a (BLOCK_H, BLOCK_M) tile, each head adding its row through a one-hot select; C G^T is
    formed once per chunk. The head sum of P is scaled by p_scale before its cast to G's dtype
    (fp16 subnormals, as in the forward) and divided out at the end."""
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_t = tl.arange(0, BLOCK_T)
    offs_h = tl.arange(0, BLOCK_H)
    mask_m = offs_m < Nq
    mask_d = offs_d < D
    mask_t = offs_t < T
    c = load_tile(C + b * Nq * CS, offs_m, offs_t, mask_m, offs_t < CS, CS)
    qk_scale = scale * LOG2E
    dcross = tl.zeros([BLOCK_M, BLOCK_T], tl.float32)
    for h0 in range(0, H, BLOCK_H):
        delta = tl.zeros([BLOCK_H, BLOCK_M], tl.float32)
        for start_n in range(0, Nk, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            mask_n = offs_n < Nk
            g = load_tile(G + b * Nk * CS, offs_n, offs_t, mask_n, offs_t < CS, CS)
            cg = tl.dot(c, tl.trans(g), input_precision=PREC_C)
            p_sum = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for h in range(h0, tl.minimum(h0 + BLOCK_H, H)):
                bh = b * H + h
                q = load_tile(Q + bh * Nq * D, offs_m, offs_d, mask_m, mask_d, D)
                k = load_tile(K + bh * Nk * D, offs_n, offs_d, mask_n, mask_d, D)
                lse2 = tl.load(LSE + bh * Nq + offs_m, mask=mask_m, other=0.0) * LOG2E
                s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
                # Padded keys (k = 0) would give exp2(-L), unbounded for very negative L.
                p = tl.where(mask_n[None, :], tl.exp2(s - lse2[:, None]), 0.0)
                p_sum += p
                delta += tl.where(offs_h[:, None] == h - h0, tl.sum(p * cg, 1)[None, :], 0.0)
            dcross += tl.dot((p_sum * p_scale).to(g.dtype), g, input_precision=PREC_C)
        heads = h0 + offs_h
        tl.store(DELTA + (b * H + heads)[:, None] * Nq + offs_m[None, :], delta / H,
                 mask=(heads < H)[:, None] & mask_m[None, :])
    tl.store(DCROSS + b * Nq * T + offs_m[:, None] * T + offs_t[None, :],
             (dcross / (p_scale * H)).to(DCROSS.dtype.element_ty),
             mask=mask_m[:, None] & mask_t[None, :])


@triton.jit
def _head_grads(dk, q, k, lse2, delta, dp_t, offs_m, mask_m, mask_n, DQ, bh, Nq, qk_scale, scale,
                D: tl.constexpr, BLOCK_D: tl.constexpr, LSE_GIVEN: tl.constexpr,
                DQ_ATOMIC: tl.constexpr, PREC: tl.constexpr):
    """One head's share of a (key block, query block) tile: P_h^T recomputed once, then
    dZ_h^T = P_h^T (dP^T - delta_h) (P_h^T dP^T when L is an input) feeds both dK_h += dZ^T Q
    and dQ_h (+)= s dZ K. Padded queries and keys get P = 0 (a zero row would give exp2(-L))."""
    s_t = tl.dot(k, tl.trans(q), input_precision=PREC)
    p_t = tl.where(mask_n[:, None] & mask_m[None, :], tl.exp2(s_t * qk_scale - lse2[None, :]), 0.0)
    if LSE_GIVEN:
        ds_t = (p_t * dp_t).to(q.dtype)
    else:
        ds_t = (p_t * (dp_t - delta[None, :])).to(q.dtype)
    dk += tl.dot(ds_t, q, input_precision=PREC)
    dq = tl.dot(tl.trans(ds_t), k, input_precision=PREC) * scale
    offs_d = tl.arange(0, BLOCK_D)
    ptrs = DQ + bh * Nq * D + offs_m[:, None] * D + offs_d[None, :]
    mask = mask_m[:, None] & (offs_d < D)[None, :]
    if DQ_ATOMIC:
        tl.atomic_add(ptrs, dq, mask=mask, sem="relaxed")
    else:
        tl.store(ptrs, dq.to(DQ.dtype.element_ty), mask=mask)
    return dk


@triton.jit
def _self_cross_bwd_kernel(
    Q, K, C, G, LSE, DELTA, DQ, DK, scale, H, Nq, Nk, D: tl.constexpr, T: tl.constexpr,
    CS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_T: tl.constexpr, PAIR: tl.constexpr, LSE_GIVEN: tl.constexpr,
    DQ_ATOMIC: tl.constexpr, PREC: tl.constexpr, PREC_C: tl.constexpr,
):
    """dK_h = s dZ_h^T Q_h and dQ_h = s dZ_h K_h in one pass (DESIGN.md 1.3), dZ_h = P_h (dP -
    delta_h) (or P_h dP when L is an input), dP = C G^T / H: one (key block, batch x head
    group) per program streaming query blocks, as FA2's backward. Each tile forms the
    head-independent G C^T once for the group (PAIR: two heads) and P_h once per head for both
    gradients, where separate dQ and dK passes formed each twice. dQ rows get one product per
    key block: DQ_ATOMIC adds them into an fp32 buffer (order-dependent last bits), else (one
    key block) the program stores dQ. C and G rows are CS apart (16-byte aligned, zero-padded
    columns: see the forward)."""
    pid_n = tl.program_id(0)
    pid_bg = tl.program_id(1)
    n_groups = (H + 1) // 2 if PAIR else H
    b = (pid_bg // n_groups).to(tl.int64)
    h0 = (pid_bg % n_groups) * (2 if PAIR else 1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_t = tl.arange(0, BLOCK_T)
    mask_n = offs_n < Nk
    mask_d = offs_d < D
    bh0 = b * H + h0
    g = load_tile(G + b * Nk * CS, offs_n, offs_t, mask_n, offs_t < CS, CS)
    k0 = load_tile(K + bh0 * Nk * D, offs_n, offs_d, mask_n, mask_d, D)
    dk0 = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    if PAIR:
        # Odd H: the second head of the last group does not exist (block-shaped masks: the
        # interpreter rejects a scalar one).
        mask_n1 = mask_n & (offs_n * 0 + h0 + 1 < H)
        k1 = load_tile(K + (bh0 + 1) * Nk * D, offs_n, offs_d, mask_n1, mask_d, D)
        dk1 = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    qk_scale = scale * LOG2E
    for start_m in range(0, Nq, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        mask_m = offs_m < Nq
        c = load_tile(C + b * Nq * CS, offs_m, offs_t, mask_m, offs_t < CS, CS)
        dp_t = tl.dot(g, tl.trans(c), input_precision=PREC_C) / H
        q0 = load_tile(Q + bh0 * Nq * D, offs_m, offs_d, mask_m, mask_d, D)
        lse0 = tl.load(LSE + bh0 * Nq + offs_m, mask=mask_m, other=0.0) * LOG2E
        delta0 = tl.load(DELTA + bh0 * Nq + offs_m, mask=mask_m, other=0.0)
        dk0 = _head_grads(dk0, q0, k0, lse0, delta0, dp_t, offs_m, mask_m, mask_n, DQ, bh0, Nq,
                          qk_scale, scale, D, BLOCK_D, LSE_GIVEN, DQ_ATOMIC, PREC)
        if PAIR:
            mask_m1 = mask_m & (offs_m * 0 + h0 + 1 < H)
            q1 = load_tile(Q + (bh0 + 1) * Nq * D, offs_m, offs_d, mask_m1, mask_d, D)
            lse1 = tl.load(LSE + (bh0 + 1) * Nq + offs_m, mask=mask_m1, other=0.0) * LOG2E
            delta1 = tl.load(DELTA + (bh0 + 1) * Nq + offs_m, mask=mask_m1, other=0.0)
            dk1 = _head_grads(dk1, q1, k1, lse1, delta1, dp_t, offs_m, mask_m1, mask_n1, DQ,
                              bh0 + 1, Nq, qk_scale, scale, D, BLOCK_D, LSE_GIVEN, DQ_ATOMIC, PREC)
    mask_nd = mask_n[:, None] & mask_d[None, :]
    out = DK + offs_n[:, None] * D + offs_d[None, :]
    tl.store(out + bh0 * Nk * D, (dk0 * scale).to(DK.dtype.element_ty), mask=mask_nd)
    if PAIR:
        tl.store(out + (bh0 + 1) * Nk * D, (dk1 * scale).to(DK.dtype.element_ty),
                 mask=mask_nd & mask_n1[:, None])


def _check_inputs(q, k, cross, lse, *, needs_lse: bool = True):
    """q, k, cross (and, with needs_lse, lse) as the launchers take them; ValueError / TypeError
    naming the argument otherwise."""
    if (fast_inputs_ok(q, k, cross, 3) and cross.shape[2] <= MAX_TOKENS
            and (not needs_lse or (type(lse) is torch.Tensor and lse.shape == q.shape[:3]))):
        return
    _check_qk(q, k)
    check_tensor("cross", cross, 3, "(B, Nq, T)")
    B, H, Nq, D = q.shape
    if cross.shape[:2] != (B, Nq) or not 1 <= cross.shape[2] <= MAX_TOKENS:
        raise ValueError(f"cross must have shape (B, Nq, T) = ({B}, {Nq}, T) with "
                         f"1 <= T <= {MAX_TOKENS}, got {tuple(cross.shape)}")
    if cross.device != q.device:
        raise ValueError(f"cross must be on the device of q ({q.device}), got {cross.device}")
    if needs_lse and (not isinstance(lse, torch.Tensor) or lse.shape != (B, H, Nq)):
        raise ValueError(f"lse must be a tensor of shape {(B, H, Nq)}")


@functools.lru_cache(maxsize=None)
def _p_scale(dtype: torch.dtype, H: int) -> float:
    """Power-of-two factor applied to the head-summed probabilities before their cast to fp16
    (entries <= H * p_scale < 2^15 stay finite; entries ~1/N stay out of the subnormals).
    bfloat16 has fp32's exponent range and fp32 is not cast: 1."""
    if dtype != torch.float16:
        return 1.0
    return float(2.0 ** max(0, math.floor(math.log2(2.0 ** 15 / H))))


def self_cross_fwd(q, k, cross, lse, scale, *, checked: bool = False):
    """out (B, Nk, T) in cross.dtype: (1/H) sum_h P_h^T C, P_h = exp(scale q k^T - lse_h).
    The head-summed P tiles are cast to cross.dtype for the products with C (fp32 C exact).
    checked=True: the caller has checked the inputs (attention_fwd)."""
    if not checked:
        _check_inputs(q, k, cross, lse)
    q, k, cross = q.contiguous(), k.contiguous(), cross.contiguous()
    B, H, Nq, D = q.shape
    Nk, T = k.shape[2], cross.shape[2]
    plan = _fwd_plan(B, H, Nq, Nk, D, T, q.dtype, cross.dtype, q.get_device())
    return _forward(q, k, cross, as_contiguous(lse, torch.float32), scale, (B, H, Nq, Nk, D, T), plan)


def self_cross_lse_fwd(q, k, cross, scale, *, checked: bool = False):
    """(out (B, Nk, T), lse (B, H, Nq) float32): the lse pass (attention.lse_fwd's kernel), then
    self_cross_fwd's, in one host call with one cached plan for both launches (each call layer
    and plan lookup costs host time on every op call)."""
    if not checked:
        _check_inputs(q, k, cross, None, needs_lse=False)
    q, k, cross = q.contiguous(), k.contiguous(), cross.contiguous()
    B, H, Nq, D = q.shape
    Nk, T = k.shape[2], cross.shape[2]
    lse_grid, lse_kw, plan = _lse_fwd_plan(B, H, Nq, Nk, D, T, q.dtype, cross.dtype, q.get_device())
    lse = torch.empty(B, H, Nq, device=q.device, dtype=torch.float32)
    attention_launch_fwd(q, k, None, None, lse, scale, (Nq, Nk, D, D), lse_grid, lse_kw)
    return _forward(q, k, cross, lse, scale, (B, H, Nq, Nk, D, T), plan), lse


def _forward(q, k, cross, lse, scale, sizes, plan):
    """self_cross_fwd on contiguous q, k, cross and a contiguous float32 lse, with its sizes
    (B, H, Nq, Nk, D, T) and plan."""
    B, H, Nq, Nk, D, T = sizes
    n_split, per_split, grid, p_scale, kw = plan
    if n_split == 1:  # the kernel writes split 0 of a (n_split, B, Nk, T) buffer: this one
        # empty_like of the contiguous cross is the cheaper allocation (self-attention: Nk = Nq)
        out = torch.empty_like(cross) if Nk == Nq else torch.empty(B, Nk, T, device=q.device, dtype=cross.dtype)
    else:  # fp32 partial sums, reduced below in a fixed order
        out = torch.empty(n_split, B, Nk, T, device=q.device, dtype=torch.float32)
    if kw["CS"] != T:  # padded_rows, with the stride the plan already holds
        cross = torch.nn.functional.pad(cross, (0, kw["CS"] - T))
    launch(_self_cross_fwd_kernel)[grid](
        q, k, cross, lse, out, float(scale), p_scale, H, Nq, Nk, n_split, per_split, D, T, **kw)
    if n_split == 1:
        return out
    return out.sum(0).to(cross.dtype)


@functools.lru_cache(maxsize=256)
def _lse_fwd_plan(B, H, Nq, Nk, D, T, dtype, cross_dtype, dev) -> tuple:
    """(lse grid, lse launch keywords, _fwd_plan) of self_cross_lse_fwd for one shape."""
    return (*attention_fwd_plan(B * H, Nq, D, D, False, dtype, dev),
            _fwd_plan(B, H, Nq, Nk, D, T, dtype, cross_dtype, dev))


@functools.lru_cache(maxsize=256)
def _fwd_plan(B, H, Nq, Nk, D, T, dtype, cross_dtype, dev) -> tuple:
    """(n_split, per_split, grid, p_scale, launch keywords) of the forward for one shape on
    device index `dev`: computed once per shape (tiles, query splits and a dozen keywords cost
    microseconds per call)."""
    arch, sms = device_facts(dev)
    cfg = self_cross_config(pad(D), pad(T), dtype, "fwd", arch)
    block_t = token_block(pad(T))
    n_programs = cdiv(Nk, cfg.block_n) * cdiv(T, block_t) * B
    m_blocks = cdiv(Nq, cfg.block_m)
    n_split = query_splits(n_programs, m_blocks, sms)
    per_split = cdiv(m_blocks, n_split)
    n_split = cdiv(m_blocks, per_split)  # no empty splits
    grid = check_grid("self_cross_fwd", (cdiv(Nk, cfg.block_n), cdiv(T, block_t), B * n_split))
    kw = dict(CS=row_stride(T, cross_dtype), BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
              BLOCK_D=pad(D), BLOCK_T=block_t, HEAD_OUTER=cfg.head_outer, PREC=dot_precision(dtype),
              PREC_C=dot_precision(cross_dtype), num_warps=cfg.num_warps,
              num_stages=cfg.num_stages)
    return n_split, per_split, grid, _p_scale(cross_dtype, H), kw


def self_cross_bwd(q, k, cross, lse, dout, scale, lse_given):
    """(dq, dk, dcross, dlse) of self_cross_fwd given dout (B, Nk, T) or None (zero).

    dq (B, H, Nq, D), dk (B, H, Nk, D), dcross (B, Nq, T) in the input dtypes (dout is read
    in cross.dtype, the dtype of the forward output); dlse (B, H, Nq) float32 when lse_given
    (lse is then an input of the product, not a function of q and k), else None."""
    _check_inputs(q, k, cross, lse)
    B, H, Nq, D = q.shape
    Nk, T = k.shape[2], cross.shape[2]
    if dout is not None and dout.shape != (B, Nk, T):
        raise ValueError(f"dout must have shape {(B, Nk, T)}, got {tuple(dout.shape)}")
    if dout is None:
        dlse = torch.zeros_like(lse, dtype=torch.float32) if lse_given else None
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(cross), dlse
    q, k = q.contiguous(), k.contiguous()
    cross = cross.contiguous()
    dout = as_contiguous(dout, cross.dtype)
    lse = as_contiguous(lse, torch.float32)
    pre_grid, pre_kw, grid, kw, p_scale, dq_atomic = _bwd_plan(
        B, H, Nq, Nk, D, T, q.dtype, cross.dtype, q.get_device(), bool(lse_given))
    c, g = padded_rows(cross), padded_rows(dout)
    delta = torch.empty(B, H, Nq, device=q.device, dtype=torch.float32)
    dcross = torch.empty(B, Nq, T, device=q.device, dtype=cross.dtype)
    dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32) if dq_atomic else torch.empty_like(q)
    dk = torch.empty_like(k)
    launch(_self_cross_bwd_preprocess_kernel)[pre_grid](
        q, k, c, g, lse, dcross, delta, float(scale), p_scale, H, Nq, Nk, D, T, **pre_kw)
    launch(_self_cross_bwd_kernel)[grid](
        q, k, c, g, lse, delta, dq, dk, float(scale), H, Nq, Nk, D, T, **kw)
    if dq_atomic:
        dq = dq.to(q.dtype)
    # L as an input: dL_h = -delta_h (DESIGN.md 1.3), the row term with its sign flipped.
    dlse = delta.neg() if lse_given else None
    return dq, dk, dcross, dlse


@functools.lru_cache(maxsize=256)
def _bwd_plan(B, H, Nq, Nk, D, T, dtype, cross_dtype, dev, lse_given) -> tuple:
    """(preprocess grid, preprocess keywords, backward grid, backward keywords, p_scale, dq
    atomic) of the backward for one shape on device index `dev`, built once."""
    arch = device_facts(dev)[0]
    flags = dict(CS=row_stride(T, cross_dtype), BLOCK_D=pad(D), BLOCK_T=pad(T),
                 PREC=dot_precision(dtype), PREC_C=dot_precision(cross_dtype))
    cfg = self_cross_config(pad(D), pad(T), dtype, "pre", arch)
    pre_grid = check_grid("self_cross_bwd", (cdiv(Nq, cfg.block_m), B))
    pre_kw = dict(flags, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                  BLOCK_H=min(cfg.heads, next_pow2(H)), num_warps=cfg.num_warps,
                  num_stages=cfg.num_stages)
    cfg = self_cross_config(pad(D), pad(T), dtype, "bwd", arch)
    grid = check_grid("self_cross_bwd", (cdiv(Nk, cfg.block_n), B * cdiv(H, cfg.heads)))
    dq_atomic = grid[0] > 1
    kw = dict(flags, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, PAIR=cfg.heads == 2,
              LSE_GIVEN=lse_given, DQ_ATOMIC=dq_atomic, num_warps=cfg.num_warps,
              num_stages=cfg.num_stages)
    return pre_grid, pre_kw, grid, kw, _p_scale(cross_dtype, H), dq_atomic


def aot_specs(arch: int) -> list:
    """Variants the launchers select on compute capability `arch` (compile report); the
    backward with atomic dQ (several key blocks, the benchmark sizes)."""
    specs = []
    for dtype in SUPPORTED_DTYPES:
        t, prec = ptr(dtype), dot_precision(dtype)
        for d in AOT_HEAD_DIMS:
            for tok in AOT_TOKENS:
                sizes = dict(scale="fp32", H="i32", Nq="i32", Nk="i32")
                label = f"D={d} T={tok}"
                cs = row_stride(tok, dtype)
                cfg = self_cross_config(pad(d), pad(tok), dtype, "fwd", arch)
                # The head-outer form is compiled on sm_90 for 16-bit inputs whatever the config
                # says, for the report and the GPU lab's sweep.
                for outer in ((False, True) if arch >= 90 and dtype != torch.float32 else (cfg.head_outer,)):
                    specs.append(KernelSpec(
                        _self_cross_fwd_kernel, dtype,
                        dict(Q=t, K=t, C=t, LSE="*fp32", OUT=t, p_scale="fp32", n_split="i32",
                             m_blocks_per_split="i32", **sizes),
                        dict(D=d, T=tok, CS=cs, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                             BLOCK_D=pad(d), BLOCK_T=token_block(pad(tok)), HEAD_OUTER=outer,
                             PREC=prec, PREC_C=prec),
                        cfg.num_warps, cfg.num_stages, label + (" head outer" if outer else "")))
                cfg = self_cross_config(pad(d), pad(tok), dtype, "pre", arch)
                specs.append(KernelSpec(
                    _self_cross_bwd_preprocess_kernel, dtype,
                    dict(Q=t, K=t, C=t, G=t, LSE="*fp32", DCROSS=t, DELTA="*fp32",
                         p_scale="fp32", **sizes),
                    dict(D=d, T=tok, CS=cs, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                         BLOCK_D=pad(d), BLOCK_T=pad(tok), BLOCK_H=min(cfg.heads, 16), PREC=prec,
                         PREC_C=prec),
                    cfg.num_warps, cfg.num_stages, label + " H=10"))
                cfg = self_cross_config(pad(d), pad(tok), dtype, "bwd", arch)
                for given in (False, True):
                    specs.append(KernelSpec(
                        _self_cross_bwd_kernel, dtype,
                        dict(Q=t, K=t, C=t, G=t, LSE="*fp32", DELTA="*fp32", DQ="*fp32", DK=t,
                             **sizes),
                        dict(D=d, T=tok, CS=cs, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                             BLOCK_D=pad(d), BLOCK_T=pad(tok), PAIR=cfg.heads == 2,
                             LSE_GIVEN=given, DQ_ATOMIC=True, PREC=prec, PREC_C=prec),
                        cfg.num_warps, cfg.num_stages, label + (" lse given" if given else "")))
    return specs
