"""Flash attention forward (with the row log-sum-exp) and its FlashAttention-2 backward.

Shapes: q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv), out (B, H, Nq, Dv),
lse (B, H, Nq) float32 (natural log). Scores are handled in base 2 inside the kernels:
s * q.k * log2(e) and lse * log2(e), so every exponential is one exp2.

Structure (FlashAttention-2 and Triton's fused-attention tutorial): the forward streams full
key tiles without masks and masks one tail tile, with the scale folded into the exponent's
FFMA; the backward is one pass of five products per tile (S, dV, dP, dK, dQ) with atomic fp32
dQ adds, and query splits for short key rows.
UNVERIFIED ON A GPU: this structure has run only under TRITON_INTERPRET=1 and been compiled
ahead of time for sm_80/89/90 (kernels/compile_report.py). The earlier structure (masked
tiles, seven products in two backward passes) passed every GPU test on an H200 (sm_90,
triton 3.6; benchmarks/results/gpu-h200-2026-12-04/).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._common import (AOT_HEAD_DIMS, SUPPORTED_DTYPES, KernelSpec, LN2, LOG2E, attention_config,
                      check_grid, check_head_dims, check_tensor, device_facts, dot_precision,
                      load_rows, load_tile, padded_rows, ptr, query_splits, row_stride,
                      set_tma_allocator)
from ._common import as_contiguous, cdiv, exact_delta, fast_inputs_ok, launch, pad

_LOG2E = float(LOG2E.value)


@triton.jit
def _fwd_tile(acc, l_i, m_i, q, k_src, v_src, head, start_n, Nk, qk_scale, D: tl.constexpr,
              Dv: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
              BLOCK_DV: tl.constexpr, HAS_V: tl.constexpr, MASK_N: tl.constexpr,
              TMA: tl.constexpr, PREC: tl.constexpr):
    """One key tile of the online softmax. qk_scale = |s| log2(e) >= 0, so the row max of the
    raw products times qk_scale is the max of the scaled scores and p = exp2(qk * qk_scale - m)
    is one FFMA per entry (the tutorial's form; FMUL + FADD before). MASK_N (the one tail tile)
    masks keys >= Nk; full tiles carry no mask, no FSEL/ISETP. k_src, v_src: this head's base
    pointers, or with TMA the (B*H, Nk, D) tensor descriptors (rows past Nk and columns past D
    arrive as zeros from the copy engine)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    mask_n = offs_n < Nk
    if TMA:
        k = k_src.load([head, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
    else:
        k = load_rows(k_src, offs_n, mask_n, D, BLOCK_D, MASK_N)
    qk = tl.dot(q, tl.trans(k), input_precision=PREC)
    if MASK_N:
        m_new = tl.maximum(m_i, tl.max(tl.where(mask_n[None, :], qk, float("-inf")), 1) * qk_scale)
        # Padded keys are zero rows (qk = 0, finite): the select after the exponential keeps
        # a scale of 0 from turning -inf * 0 into NaN.
        p = tl.where(mask_n[None, :], tl.exp2(qk * qk_scale - m_new[:, None]), 0.0)
    else:
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.exp2(qk * qk_scale - m_new[:, None])
    alpha = tl.exp2(m_i - m_new)
    l_i = l_i * alpha + tl.sum(p, 1)
    if HAS_V:
        if TMA:
            v = v_src.load([head, start_n, 0]).reshape(BLOCK_N, BLOCK_DV)
        else:
            v = load_rows(v_src, offs_n, mask_n, Dv, BLOCK_DV, MASK_N)
        # P in the value dtype for the tensor-core product (as FA2); exact for fp32. The
        # rescaled accumulator goes into the product as its addend.
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=PREC)
    return acc, l_i, m_new


@triton.jit
def _attention_fwd_kernel(
    Q, K, V, O, LSE, qk_scale, Nq, Nk, D: tl.constexpr, Dv: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, HAS_V: tl.constexpr, NEG_Q: tl.constexpr, TMA: tl.constexpr,
    PREC: tl.constexpr,
):
    """O = softmax(s Q K^T) V and L[i] = log sum_j exp(s q_i.k_j), one (query block,
    batch*head) per program, keys streamed with the online softmax of FlashAttention-2 (Dao
    2023, Algorithm 1): the full key tiles unmasked, then one masked tail tile. qk_scale =
    |s| log2(e); NEG_Q (s < 0) negates q once per program, exactly, so s q.k = |s| (-q).k.
    HAS_V=False computes L only (DESIGN.md 1.2 records (q, k, L) of self layers). TMA (sm_90,
    16-byte aligned rows) streams K and V through tensor descriptors built in the kernel (the
    Hopper copy engine: one instruction per tile instead of per-thread address math); the
    launcher sets a Triton allocator for their scratch."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < Nq
    q = load_rows(Q + bh * Nq * D, offs_m, mask_m, D, BLOCK_D, True)
    if NEG_Q:
        q = -q
    head = tl.program_id(1)  # int32: descriptor coordinates are 32-bit
    if TMA:
        BH = tl.num_programs(1)
        k_src = tl.make_tensor_descriptor(K, shape=[BH, Nk, D], strides=[Nk * D, D, 1],
                                          block_shape=[1, BLOCK_N, BLOCK_D])
        v_src = tl.make_tensor_descriptor(V, shape=[BH, Nk, Dv], strides=[Nk * Dv, Dv, 1],
                                          block_shape=[1, BLOCK_N, BLOCK_DV])
    else:
        k_src = K + bh * Nk * D
        v_src = V + bh * Nk * Dv
    # Every key tile holds at least one valid key, so the running max is finite after the first
    # tile and exp2(m_old - m_new) = exp2(-inf) = 0 there: no NaN from masked columns.
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    n_full = Nk - Nk % BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_src, v_src, head, start_n, Nk, qk_scale, D, Dv,
                                  BLOCK_N, BLOCK_D, BLOCK_DV, HAS_V, False, TMA, PREC)
    if n_full < Nk:
        acc, l_i, m_i = _fwd_tile(acc, l_i, m_i, q, k_src, v_src, head, n_full, Nk, qk_scale, D, Dv,
                                  BLOCK_N, BLOCK_D, BLOCK_DV, HAS_V, True, TMA, PREC)
    tl.store(LSE + bh * Nq + offs_m, (m_i + tl.log2(l_i)) * LN2, mask=mask_m)
    if HAS_V:
        offs_dv = tl.arange(0, BLOCK_DV)
        acc = acc / l_i[:, None]
        tl.store(O + bh * Nq * Dv + offs_m[:, None] * Dv + offs_dv[None, :],
                 acc.to(O.dtype.element_ty), mask=mask_m[:, None] & (offs_dv < Dv)[None, :])


@triton.jit
def _attention_bwd_preprocess_kernel(
    Q, K, V, O, DO, LSE, DLSE, EXTRA, DELTA, scale, extra_scale, H, Nq, Nk, D: tl.constexpr,
    Dv: tl.constexpr, ES: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, HAS_DO: tl.constexpr, HAS_DLSE: tl.constexpr,
    HAS_EXTRA: tl.constexpr, EXACT: tl.constexpr, PREC: tl.constexpr,
):
    """delta[i] = sum_j P_ij dP_ij - dL[i], the softmax-backward row term of FA2 (Dao 2023,
    Algorithm 2 line 4), widened by the lse gradient dL (dZ = P (dP - delta)) and the extra
    score gradient E added to every head's dP (BACKENDS.md cross_attention_bwd).

    Two ways to the sum, chosen by the launcher (EXACT, see exact_delta):
      EXACT:  sum_j P_ij (dO V^T + E)_ij over key tiles, with P recomputed from the lse: the
              same P and dP the dQ and dK programs use, so dZ rows sum to zero to fp32 rounding;
      else:   rowsum(dO * O) (FA2) + rowsum(P * E), which reads the stored, rounded O. Its error
              (|dO| |O| u, u the unit roundoff of q.dtype) enters dQ_i as the coherent term
              err_i * s * sum_j P_ij k_j, which does not average out over the keys: on short key
              rows (small, cancelling dQ) it gave bf16 dQ 7x the error of PyTorch on an H200."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < Nq
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_dv = offs_dv < Dv
    delta = tl.zeros([BLOCK_M], tl.float32)
    if HAS_DLSE:
        delta -= tl.load(DLSE + bh * Nq + offs_m, mask=mask_m, other=0.0).to(tl.float32)
    if HAS_DO:
        do = load_tile(DO + bh * Nq * Dv, offs_m, offs_dv, mask_m, mask_dv, Dv)
        if not EXACT:
            o = load_tile(O + bh * Nq * Dv, offs_m, offs_dv, mask_m, mask_dv, Dv)
            delta += tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    if EXACT or HAS_EXTRA:
        b = bh // H
        offs_d = tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        q = load_tile(Q + bh * Nq * D, offs_m, offs_d, mask_m, mask_d, D)
        lse2 = tl.load(LSE + bh * Nq + offs_m, mask=mask_m, other=0.0) * LOG2E
        for start_n in range(0, Nk, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            mask_n = offs_n < Nk
            k = load_tile(K + bh * Nk * D, offs_n, offs_d, mask_n, mask_d, D)
            s = tl.dot(q, tl.trans(k), input_precision=PREC) * (scale * LOG2E)
            mask = mask_m[:, None] & mask_n[None, :]
            p = tl.where(mask, tl.exp2(s - lse2[:, None]), 0.0)
            dp = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            if EXACT and HAS_DO:
                v = load_tile(V + bh * Nk * Dv, offs_n, offs_dv, mask_n, mask_dv, Dv)
                dp += tl.dot(do, tl.trans(v), input_precision=PREC)
            if HAS_EXTRA:
                # Columns Nk..ES are zeros of the padded buffer (padded_rows) and meet P = 0: a
                # column mask against the compile-time ES keeps the loads 16-byte vectors.
                dp += tl.load(EXTRA + b * Nq * ES + offs_m.to(tl.int64)[:, None] * ES + offs_n[None, :],
                              mask=mask_m[:, None] & (offs_n < ES)[None, :], other=0.0
                              ).to(tl.float32) * extra_scale
            delta += tl.sum(p * dp, 1)
    tl.store(DELTA + bh * Nq + offs_m, delta, mask=mask_m)


@triton.jit
def _bwd_tiles(dk, dv, k, v, start_m, end_m, offs_n, mask_n, Q, DO, LSE, DELTA, EXTRA, DQ, bh, b,
               scale, qk_scale, extra_scale, Nq, Nk, D: tl.constexpr, Dv: tl.constexpr,
               ES: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
               HAS_DO: tl.constexpr, HAS_EXTRA: tl.constexpr, DQ_ATOMIC: tl.constexpr,
               MASK: tl.constexpr, PREC: tl.constexpr):
    """Query blocks [start_m, end_m) against one key block: the five products of FA2's
    backward (Dao 2023, Algorithm 2) per tile, on transposed (keys x queries) tiles:
      S^T = K Q^T, P^T = exp2(S^T |s| log2 e - L log2 e), dV += P^T dO, dP^T = V dO^T (+ E^T),
      dS^T = P^T (dP^T - delta), dK += dS^T Q, dQ (+)= s dS K.
    MASK (tail tiles only) zeroes P outside Nq x Nk: a padded key (k = 0) would give
    P = exp2(-L), unbounded for very negative L. Returns (dk, dv)."""
    offs_m0 = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    for start in range(start_m, end_m, BLOCK_M):
        offs_m = start + offs_m0
        mask_m = offs_m < Nq
        q = load_rows(Q + bh * Nq * D, offs_m, mask_m, D, BLOCK_D, MASK)
        if MASK:
            lse2 = tl.load(LSE + bh * Nq + offs_m, mask=mask_m, other=0.0) * LOG2E
            delta = tl.load(DELTA + bh * Nq + offs_m, mask=mask_m, other=0.0)
        else:
            lse2 = tl.load(LSE + bh * Nq + offs_m) * LOG2E
            delta = tl.load(DELTA + bh * Nq + offs_m)
        s_t = tl.dot(k, tl.trans(q), input_precision=PREC)
        p_t = tl.exp2(s_t * qk_scale - lse2[None, :])
        if MASK:
            p_t = tl.where(mask_n[:, None] & mask_m[None, :], p_t, 0.0)
        if HAS_DO:
            do = load_rows(DO + bh * Nq * Dv, offs_m, mask_m, Dv, BLOCK_DV, MASK)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=PREC)
            dp_t = tl.dot(v, tl.trans(do), input_precision=PREC)
        else:
            dp_t = tl.zeros_like(p_t)
        if HAS_EXTRA:
            e_ptrs = EXTRA + b * Nq * ES + offs_m.to(tl.int64)[None, :] * ES + offs_n[:, None]
            if MASK:
                e_t = tl.load(e_ptrs, mask=(offs_n < ES)[:, None] & mask_m[None, :], other=0.0)
            else:
                e_t = tl.load(e_ptrs)
            dp_t += e_t.to(tl.float32) * extra_scale
        ds_t = (p_t * (dp_t - delta[None, :])).to(q.dtype)
        dk += tl.dot(ds_t, q, input_precision=PREC)
        dq = tl.dot(tl.trans(ds_t), k, input_precision=PREC) * scale
        dq_ptrs = DQ + bh * Nq * D + offs_m[:, None] * D + offs_d[None, :]
        dq_mask = mask_m[:, None] & (offs_d < D)[None, :]
        if DQ_ATOMIC:
            tl.atomic_add(dq_ptrs, dq, mask=dq_mask, sem="relaxed")
        else:
            tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=dq_mask)
    return dk, dv


@triton.jit
def _attention_bwd_kernel(
    Q, K, V, DO, LSE, DELTA, EXTRA, DQ, DK, DV, scale, qk_scale, extra_scale, H, Nq, Nk,
    m_blocks_per_split,
    D: tl.constexpr, Dv: tl.constexpr, ES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, HAS_DO: tl.constexpr, HAS_EXTRA: tl.constexpr,
    DQ_ATOMIC: tl.constexpr, DKV_ATOMIC: tl.constexpr, PREC: tl.constexpr,
):
    """dQ, dK, dV of the attention in one pass with five products per tile (FA2's backward):
    dV = P^T dO, dK = s dZ^T Q, dQ = s dZ K with dZ = P (dO V^T + E - delta). One (key
    block, batch*head, query split) per program; the program keeps its key block's K, V and
    dK, dV accumulators and streams query blocks (full ones unmasked, then the tail).

    dQ rows receive one partial product per key block: DQ_ATOMIC adds them into an fp32
    buffer (FA2's atomic dQ; the order of the adds, hence dQ's last bits, varies run to run),
    else (a single key block) the program stores dQ directly. Query splits let short key rows
    (77 text tokens: one key block) fill the GPU: with DKV_ATOMIC each split adds its partial
    dK, dV into fp32 buffers. qk_scale = s log2(e) of any sign (P comes from the lse: no max)."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    split = tl.program_id(2)
    b = bh // H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < Nk
    k = load_rows(K + bh * Nk * D, offs_n, mask_n, D, BLOCK_D, True)
    v = load_rows(V + bh * Nk * Dv, offs_n, mask_n, Dv, BLOCK_DV, True)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    m_begin = split * m_blocks_per_split * BLOCK_M
    m_end = tl.minimum(m_begin + m_blocks_per_split * BLOCK_M, Nq)
    # Unmasked tiles: full query blocks of a full key block; everything else is masked.
    full_end = m_begin + (m_end - m_begin) // BLOCK_M * BLOCK_M
    if pid_n * BLOCK_N + BLOCK_N > Nk:
        full_end = m_begin
    dk, dv = _bwd_tiles(dk, dv, k, v, m_begin, full_end, offs_n, mask_n, Q, DO, LSE, DELTA, EXTRA,
                        DQ, bh, b, scale, qk_scale, extra_scale, Nq, Nk, D, Dv, ES, BLOCK_M, BLOCK_D,
                        BLOCK_DV,
                        HAS_DO, HAS_EXTRA, DQ_ATOMIC, False, PREC)
    dk, dv = _bwd_tiles(dk, dv, k, v, full_end, m_end, offs_n, mask_n, Q, DO, LSE, DELTA, EXTRA,
                        DQ, bh, b, scale, qk_scale, extra_scale, Nq, Nk, D, Dv, ES, BLOCK_M, BLOCK_D,
                        BLOCK_DV,
                        HAS_DO, HAS_EXTRA, DQ_ATOMIC, True, PREC)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    dk_ptrs = DK + bh * Nk * D + offs_n[:, None] * D + offs_d[None, :]
    dv_ptrs = DV + bh * Nk * Dv + offs_n[:, None] * Dv + offs_dv[None, :]
    dk_mask = mask_n[:, None] & (offs_d < D)[None, :]
    dv_mask = mask_n[:, None] & (offs_dv < Dv)[None, :]
    if DKV_ATOMIC:
        tl.atomic_add(dk_ptrs, dk * scale, mask=dk_mask, sem="relaxed")
        tl.atomic_add(dv_ptrs, dv, mask=dv_mask, sem="relaxed")
    else:
        tl.store(dk_ptrs, (dk * scale).to(DK.dtype.element_ty), mask=dk_mask)
        tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=dv_mask)


def _check_qk(q, k):
    check_tensor("q", q, 4, "(B, H, Nq, D)")
    check_tensor("k", k, 4, "(B, H, Nk, D)")
    if k.dtype != q.dtype:
        raise TypeError(f"k must have the dtype of q ({q.dtype}), got {k.dtype}")
    if k.device != q.device:
        raise ValueError(f"k must be on the device of q ({q.device}), got {k.device}")
    B, H, _, D = q.shape
    if k.shape[0] != B or k.shape[1] != H or k.shape[3] != D or k.shape[2] < 1:
        raise ValueError(f"k must have shape (B, H, Nk>=1, D) = ({B}, {H}, Nk, {D}), "
                         f"got {tuple(k.shape)}")
    check_head_dims(D=D)


def _check_v(q, k, v):
    check_tensor("v", v, 4, "(B, H, Nk, Dv)")
    if v.dtype != q.dtype:
        raise TypeError(f"v must have the dtype of q ({q.dtype}), got {v.dtype}")
    if v.device != q.device:
        raise ValueError(f"v must be on the device of q ({q.device}), got {v.device}")
    if tuple(v.shape[:3]) != tuple(k.shape[:3]):
        raise ValueError(f"v must have shape (B, H, Nk, Dv) with (B, H, Nk) = "
                         f"{tuple(k.shape[:3])}, got {tuple(v.shape)}")
    check_head_dims(Dv=v.shape[3])


def _forward(q, k, v, scale):
    B, H, Nq, D = q.shape
    Nk = k.shape[2]
    Dv = v.shape[3] if v is not None else D
    q, k = q.contiguous(), k.contiguous()
    lse = torch.empty(B, H, Nq, device=q.device, dtype=torch.float32)
    out = None
    if v is not None:
        v = v.contiguous()
        # empty_like of the contiguous q is the cheapest allocation (~1 us less per call)
        out = torch.empty_like(q) if Dv == D else torch.empty(B, H, Nq, Dv, device=q.device, dtype=q.dtype)
    launch_fwd(q, k, v, out, lse, scale, (Nq, Nk, D, Dv),
               *fwd_plan(B * H, Nq, D, Dv, v is not None, q.dtype, q.get_device()))
    return out, lse


def launch_fwd(q, k, v, out, lse, scale, sizes, grid, kw):
    """The forward kernel's one launch site: contiguous q, k (v, out: None for lse only), lse
    (B, H, Nq) float32 to fill, sizes (Nq, Nk, D, Dv), and the (grid, keywords) of fwd_plan."""
    v = v if v is not None else k
    if kw["TMA"]:
        if (k.data_ptr() | v.data_ptr()) % 16:
            kw = dict(kw, TMA=False)  # a view at an odd offset: descriptors need 16-byte bases
        elif k.is_cuda:
            set_tma_allocator()  # per call: Triton keeps the allocator per thread
    # |s| log2(e) and the sign as NEG_Q (see the kernel): the launch keywords stay per shape.
    launch(_attention_fwd_kernel)[grid](
        q, k, v, out if out is not None else q, lse, abs(scale) * _LOG2E, *sizes,
        NEG_Q=scale < 0, **kw)


@functools.lru_cache(maxsize=256)
def fwd_plan(BH: int, Nq: int, D: int, Dv: int, has_v: bool, dtype: torch.dtype, dev: int) -> tuple[tuple, dict]:
    """(grid, launch keywords) of the forward for one shape on device index `dev`, built once
    (tiles, grid and a dozen keywords cost microseconds per call). TMA where the config asks for
    it and K, V rows are 16-byte multiples (a descriptor's requirement)."""
    cfg = attention_config(pad(D), pad(Dv), dtype, "fwd", device_facts(dev)[0])
    grid = check_grid("attention_fwd", (cdiv(Nq, cfg.block_m), BH))
    size = dtype.itemsize
    tma = cfg.tma and (D * size) % 16 == 0 and (Dv * size) % 16 == 0
    return grid, dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(D), BLOCK_DV=pad(Dv),
                      HAS_V=has_v, TMA=tma, PREC=dot_precision(dtype), num_warps=cfg.num_warps,
                      num_stages=cfg.num_stages)


def attention_fwd(q, k, v, scale, *, checked: bool = False):
    """out (B, H, Nq, Dv) in q.dtype and lse (B, H, Nq) float32 of softmax(scale q k^T) v.

    checked=True: the caller has checked the inputs (fasttrack.ops does, once per shape); the
    launcher then skips its own checks, which are for direct callers."""
    if not checked and not fast_inputs_ok(q, k, v, 4):
        _check_qk(q, k)
        _check_v(q, k, v)
    return _forward(q, k, v, scale)


def lse_fwd(q, k, scale, *, checked: bool = False):
    """lse (B, H, Nq) float32: L[i] = log sum_j exp(scale q_i.k_j); no value pass.
    checked=True: the caller has checked q and k (attention_fwd)."""
    if not checked:
        _check_qk(q, k)
    return _forward(q, k, None, scale)[1]


def attention_bwd(q, k, v, out, lse, dout, dlse, scale, dp_extra=None, extra_scale=1.0, *,
                  checked: bool = False):
    """(dq, dk, dv) of attention_fwd, each in q.dtype and shaped like its input.

    dout (B, H, Nq, Dv) or None (zero), dlse (B, H, Nq) or None: gradient of the returned lse
    (adds P * dlse to dZ). dp_extra (B, Nq, Nk) or None, any float dtype: extra_scale *
    dp_extra is added to dP of every head (and rowsum(P * that) to delta), the head-mean
    probability gradient of cross attention (extra_scale = 1/H); read as it is, no copy.
    checked=True: q, k, v were checked by the caller (attention_fwd); the gradients' shapes
    are still checked.
    """
    if not checked and not fast_inputs_ok(q, k, v, 4):
        _check_qk(q, k)
        _check_v(q, k, v)
    B, H, Nq, D = q.shape
    Nk, Dv = k.shape[2], v.shape[3]
    if lse.shape != (B, H, Nq):
        raise ValueError(f"lse must have shape {(B, H, Nq)}, got {tuple(lse.shape)}")
    if dout is not None and dout.shape != (B, H, Nq, Dv):
        raise ValueError(f"dout must have shape {(B, H, Nq, Dv)}, got {tuple(dout.shape)}")
    if dout is not None and out is None:
        raise ValueError("out is required when dout is given")
    if dout is not None and out.shape != dout.shape:
        raise ValueError(f"out must have shape {(B, H, Nq, Dv)}, got {tuple(out.shape)}")
    if dlse is not None and dlse.shape != (B, H, Nq):
        raise ValueError(f"dlse must have shape {(B, H, Nq)}, got {tuple(dlse.shape)}")
    if dp_extra is not None and dp_extra.shape != (B, Nq, Nk):
        raise ValueError(f"dp_extra must have shape {(B, Nq, Nk)}, got {tuple(dp_extra.shape)}")
    if dout is None and dlse is None and dp_extra is None:
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)

    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    lse = as_contiguous(lse, torch.float32)
    dummy = lse
    if dout is not None:
        dout = as_contiguous(dout, q.dtype)
        out = as_contiguous(out, q.dtype)
    if dlse is not None:
        dlse = dlse.contiguous()
    if dp_extra is not None:
        dp_extra = padded_rows(dp_extra.contiguous())  # 16-byte aligned rows: vector loads
    grid_pre, grid, pre, per_split, kw, dq_atomic, dkv_atomic = _bwd_launch(
        B * H, Nq, Nk, D, Dv, q.dtype, q.get_device(), dout is not None,
        dp_extra.dtype if dp_extra is not None else None, dlse is not None)
    do = dout if dout is not None else dummy
    extra = dp_extra if dp_extra is not None else dummy
    delta = torch.empty(B, H, Nq, device=q.device, dtype=torch.float32)
    # Atomic targets are fp32 and start at zero; the others are written once, in q.dtype.
    dq = torch.zeros(q.shape, device=q.device, dtype=torch.float32) if dq_atomic else torch.empty_like(q)
    if dkv_atomic:
        dk = torch.zeros(k.shape, device=q.device, dtype=torch.float32)
        dv = torch.zeros(v.shape, device=q.device, dtype=torch.float32)
    else:
        dk, dv = torch.empty_like(k), torch.empty_like(v)
    launch(_attention_bwd_preprocess_kernel)[grid_pre](
        q, k, v, out if out is not None else dummy, do, lse,
        dlse if dlse is not None else dummy, extra, delta, float(scale), float(extra_scale), H, Nq,
        Nk, D, Dv, **pre)
    launch(_attention_bwd_kernel)[grid](
        q, k, v, do, lse, delta, extra, dq, dk, dv, float(scale), float(scale) * _LOG2E,
        float(extra_scale), H, Nq, Nk,
        per_split, D, Dv, **kw)
    if dq_atomic:
        dq = dq.to(q.dtype)
    if dkv_atomic:
        dk, dv = dk.to(q.dtype), dv.to(q.dtype)
    return dq, dk, dv


@functools.lru_cache(maxsize=256)
def _bwd_launch(BH: int, Nq: int, Nk: int, D: int, Dv: int, dtype: torch.dtype, dev: int, has_do: bool,
                extra_dtype: torch.dtype | None, has_dlse: bool) -> tuple:
    """(preprocess grid, backward grid, preprocess keywords, m_blocks_per_split, backward
    keywords, dq atomic, dk/dv atomic) of the backward for one shape, built once.

    The backward grid is (key blocks, B*H, query splits): split until there are about two
    programs per SM (query_splits), so that 77-key rows (one key block) do not leave most SMs
    idle; dQ needs atomics when there is more than one key block, dK/dV when the queries split."""
    arch, sms = device_facts(dev)
    prec = dot_precision(dtype)
    has_extra = extra_dtype is not None
    # dp_extra's row stride (padded_rows), a compile-time constant: 1 when there is none, so
    # that self attention does not compile a backward per key count.
    es = row_stride(Nk, extra_dtype) if has_extra else 1
    pcfg = attention_config(pad(D), pad(Dv), dtype, "dq", arch)
    pre = dict(ES=es, BLOCK_M=pcfg.block_m, BLOCK_N=pcfg.block_n, BLOCK_D=pad(D), BLOCK_DV=pad(Dv),
               HAS_DO=has_do, HAS_EXTRA=has_extra, HAS_DLSE=has_dlse, EXACT=exact_delta(Nk),
               PREC=prec, num_warps=pcfg.num_warps, num_stages=pcfg.num_stages)
    grid_pre = check_grid("attention_bwd", (cdiv(Nq, pcfg.block_m), BH))
    cfg = attention_config(pad(D), pad(Dv), dtype, "bwd", arch)
    n_blocks = cdiv(Nk, cfg.block_n)
    m_blocks = cdiv(Nq, cfg.block_m)
    n_split = query_splits(n_blocks * BH, m_blocks, sms)
    per_split = cdiv(m_blocks, n_split)
    n_split = cdiv(m_blocks, per_split)  # no empty splits
    grid = check_grid("attention_bwd", (n_blocks, BH, n_split))
    dq_atomic, dkv_atomic = n_blocks > 1, n_split > 1
    kw = dict(ES=es, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(D), BLOCK_DV=pad(Dv),
              HAS_DO=has_do, HAS_EXTRA=has_extra, DQ_ATOMIC=dq_atomic, DKV_ATOMIC=dkv_atomic,
              PREC=prec, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return grid_pre, grid, pre, per_split, kw, dq_atomic, dkv_atomic


def aot_specs(arch: int) -> list:
    """The variants of this file's kernels that the launchers select on compute capability
    `arch`, for the compile report (kernels/compile_report.py). The backward is compiled with
    atomic dQ and plain dK/dV stores (long rows) and with both atomic (short, split rows)."""
    specs = []
    for dtype in SUPPORTED_DTYPES:
        for d in AOT_HEAD_DIMS:
            t, prec = ptr(dtype), dot_precision(dtype)
            cfg = attention_config(pad(d), pad(d), dtype, "fwd", arch)
            # The TMA form is compiled on sm_90 for 16-bit inputs whatever the config says, so
            # that the report and the GPU lab's sweep can weigh it against the pointer form.
            for tma in ((False, True) if arch >= 90 and dtype != torch.float32 else (False,)):
                for has_v in (True, False):
                    specs.append(KernelSpec(
                        _attention_fwd_kernel, dtype,
                        dict(Q=t, K=t, V=t, O=t, LSE="*fp32", qk_scale="fp32", Nq="i32", Nk="i32"),
                        dict(D=d, Dv=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(d),
                             BLOCK_DV=pad(d), HAS_V=has_v, NEG_Q=False, TMA=tma, PREC=prec),
                        cfg.num_warps, cfg.num_stages,
                        f"D={d}" + ("" if has_v else " lse only") + (" tma" if tma else "")))
            bsizes = dict(scale="fp32", H="i32", Nq="i32", Nk="i32")
            for extra in (False, True):
                label = f"D={d}" + (" dprobs" if extra else "")
                cfg = attention_config(pad(d), pad(d), dtype, "dq", arch)
                # dprobs comes with the 77-token rows of cross attention, at its aligned stride
                es = row_stride(77, dtype) if extra else 1
                tiles = dict(D=d, Dv=d, ES=es, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                             BLOCK_D=pad(d), BLOCK_DV=pad(d))
                # The O-based delta (long key rows) and the exact one (short rows, exact_delta).
                specs += [KernelSpec(
                    _attention_bwd_preprocess_kernel, dtype,
                    dict(Q=t, K=t, V=t, O=t, DO=t, LSE="*fp32", DLSE="*fp32", EXTRA=t,
                         DELTA="*fp32", extra_scale="fp32", **bsizes),
                    dict(tiles, HAS_DO=True, HAS_DLSE=not extra, HAS_EXTRA=extra,
                         EXACT=exact, PREC=prec),
                    cfg.num_warps, cfg.num_stages, label + (" exact delta" if exact else ""))
                    for exact in (False, True)]
                cfg = attention_config(pad(d), pad(d), dtype, "bwd", arch)
                # As _bwd_launch picks them at SD-64: self attention (4096 keys, no dprobs) adds
                # dQ atomically; cross attention (77 keys with dprobs, 10 key-block programs)
                # splits the queries (atomic dK, dV) and adds dQ atomically past one key block.
                dq_atomic, dkv_atomic = (True, False) if not extra else (cdiv(77, cfg.block_n) > 1, True)
                specs.append(KernelSpec(
                    _attention_bwd_kernel, dtype,
                    dict(Q=t, K=t, V=t, DO=t, LSE="*fp32", DELTA="*fp32", EXTRA=t, extra_scale="fp32",
                         DQ="*fp32" if dq_atomic else t, DK="*fp32" if dkv_atomic else t,
                         DV="*fp32" if dkv_atomic else t, qk_scale="fp32",
                         m_blocks_per_split="i32", **bsizes),
                    dict(D=d, Dv=d, ES=es, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(d),
                         BLOCK_DV=pad(d), HAS_DO=True, HAS_EXTRA=extra, DQ_ATOMIC=dq_atomic,
                         DKV_ATOMIC=dkv_atomic, PREC=prec),
                    cfg.num_warps, cfg.num_stages,
                    label + (" atomic dq" if dq_atomic else "") + (" atomic dk dv" if dkv_atomic else "")))
    return specs
