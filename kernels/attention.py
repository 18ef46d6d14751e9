"""Flash attention forward (with the row log-sum-exp) and its FlashAttention-2 backward.

Shapes: q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv), out (B, H, Nq, Dv),
lse (B, H, Nq) float32 (natural log). Scores are handled in base 2 inside the kernels:
s * q.k * log2(e) and lse * log2(e), so every exponential is one exp2.
Run compiled once, on an H200 (sm_90, triton 3.6, 2026-12-04): tests/test_ops_gpu.py and the
Triton cases of the CPU suite passed (benchmarks/results/gpu-h200-2026-12-04/); sm_80/89 only
compiled ahead of time (kernels/compile_report.py) and run under TRITON_INTERPRET=1.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._common import (AOT_HEAD_DIMS, SUPPORTED_DTYPES, KernelSpec, LN2, LOG2E, device_facts, attention_config,
                      check_grid, device_arch, ptr,
                      check_head_dims, check_tensor, dot_precision, load_tile)
from ._common import as_contiguous, cdiv, exact_delta, fast_inputs_ok, launch, pad


@triton.jit
def _attention_fwd_kernel(
    Q, K, V, O, LSE, scale, Nq, Nk, D: tl.constexpr, Dv: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, HAS_V: tl.constexpr, PREC: tl.constexpr,
):
    """O = softmax(s Q K^T) V and L[i] = log sum_j exp(s q_i.k_j), one (batch*head, query
    block) per program, keys streamed with the online softmax of FlashAttention-2 (Dao 2023,
    Algorithm 1). HAS_V=False computes L only (DESIGN.md 1.2 records (q, k, L) of self layers).
    """
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < Nq
    mask_d = offs_d < D
    q = load_tile(Q + bh * Nq * D, offs_m, offs_d, mask_m, mask_d, D)
    qk_scale = scale * LOG2E
    # Every key tile holds at least one valid key, so the running max is finite after the first
    # tile and exp2(m_old - m_new) = exp2(-inf) = 0 there: no NaN from masked columns.
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    if HAS_V:
        offs_dv = tl.arange(0, BLOCK_DV)
        mask_dv = offs_dv < Dv
        acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start_n in range(0, Nk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < Nk
        k = load_tile(K + bh * Nk * D, offs_n, offs_d, mask_n, mask_d, D)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if HAS_V:
            v = load_tile(V + bh * Nk * Dv, offs_n, offs_dv, mask_n, mask_dv, Dv)
            # P in the value dtype for the tensor-core product (as FA2); exact for fp32.
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
        m_i = m_new
    tl.store(LSE + bh * Nq + offs_m, (m_i + tl.log2(l_i)) * LN2, mask=mask_m)
    if HAS_V:
        acc = acc / l_i[:, None]
        tl.store(O + bh * Nq * Dv + offs_m[:, None] * Dv + offs_dv[None, :],
                 acc.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_dv[None, :])


@triton.jit
def _attention_bwd_preprocess_kernel(
    Q, K, V, O, DO, LSE, DLSE, EXTRA, DELTA, scale, H, Nq, Nk, D: tl.constexpr,
    Dv: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
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
                dp += tl.load(EXTRA + b * Nq * Nk + offs_m.to(tl.int64)[:, None] * Nk + offs_n[None, :],
                              mask=mask, other=0.0).to(tl.float32)
            delta += tl.sum(p * dp, 1)
    tl.store(DELTA + bh * Nq + offs_m, delta, mask=mask_m)


@triton.jit
def _attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, EXTRA, DK, DV, scale, H, Nq, Nk, D: tl.constexpr,
    Dv: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, HAS_DO: tl.constexpr, HAS_EXTRA: tl.constexpr, PREC: tl.constexpr,
):
    """dV = P^T dO and dK = s dZ^T Q with dZ = P (dO V^T + E - delta), one (batch*head, key
    block) per program looping over query blocks and recomputing P = exp(s Q K^T - L)
    (FA2, Dao 2023, Algorithm 2, outer loop over key blocks)."""
    pid_n = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_n = offs_n < Nk
    mask_d = offs_d < D
    mask_dv = offs_dv < Dv
    k = load_tile(K + bh * Nk * D, offs_n, offs_d, mask_n, mask_d, D)
    v = load_tile(V + bh * Nk * Dv, offs_n, offs_dv, mask_n, mask_dv, Dv)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    qk_scale = scale * LOG2E
    for start_m in range(0, Nq, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        mask_m = offs_m < Nq
        q = load_tile(Q + bh * Nq * D, offs_m, offs_d, mask_m, mask_d, D)
        lse2 = tl.load(LSE + bh * Nq + offs_m, mask=mask_m, other=0.0) * LOG2E
        delta = tl.load(DELTA + bh * Nq + offs_m, mask=mask_m, other=0.0)
        # Transposed tiles (keys x queries) so both accumulations are plain tile products.
        mask_t = mask_n[:, None] & mask_m[None, :]
        s_t = tl.dot(k, tl.trans(q), input_precision=PREC) * qk_scale
        p_t = tl.where(mask_t, tl.exp2(s_t - lse2[None, :]), 0.0)
        dp_t = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
        if HAS_DO:
            do = load_tile(DO + bh * Nq * Dv, offs_m, offs_dv, mask_m, mask_dv, Dv)
            dv += tl.dot(p_t.to(do.dtype), do, input_precision=PREC)
            dp_t += tl.dot(v, tl.trans(do), input_precision=PREC)
        if HAS_EXTRA:
            dp_t += tl.load(EXTRA + b * Nq * Nk + offs_m.to(tl.int64)[None, :] * Nk + offs_n[:, None],
                            mask=mask_t, other=0.0).to(tl.float32)
        ds_t = p_t * (dp_t - delta[None, :])
        dk += tl.dot(ds_t.to(q.dtype), q, input_precision=PREC)
    tl.store(DK + bh * Nk * D + offs_n[:, None] * D + offs_d[None, :],
             (dk * scale).to(DK.dtype.element_ty), mask=mask_n[:, None] & mask_d[None, :])
    tl.store(DV + bh * Nk * Dv + offs_n[:, None] * Dv + offs_dv[None, :],
             dv.to(DV.dtype.element_ty), mask=mask_n[:, None] & mask_dv[None, :])


@triton.jit
def _attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, EXTRA, DQ, scale, H, Nq, Nk, D: tl.constexpr,
    Dv: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, HAS_DO: tl.constexpr, HAS_EXTRA: tl.constexpr, PREC: tl.constexpr,
):
    """dQ = s dZ K with dZ = P (dO V^T + E - delta), one (batch*head, query block) per program
    looping over key blocks; a separate pass instead of FA2's atomic dQ adds (deterministic)."""
    pid_m = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_m = offs_m < Nq
    mask_d = offs_d < D
    mask_dv = offs_dv < Dv
    q = load_tile(Q + bh * Nq * D, offs_m, offs_d, mask_m, mask_d, D)
    lse2 = tl.load(LSE + bh * Nq + offs_m, mask=mask_m, other=0.0) * LOG2E
    delta = tl.load(DELTA + bh * Nq + offs_m, mask=mask_m, other=0.0)
    if HAS_DO:
        do = load_tile(DO + bh * Nq * Dv, offs_m, offs_dv, mask_m, mask_dv, Dv)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    qk_scale = scale * LOG2E
    for start_n in range(0, Nk, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < Nk
        mask = mask_m[:, None] & mask_n[None, :]
        k = load_tile(K + bh * Nk * D, offs_n, offs_d, mask_n, mask_d, D)
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        p = tl.where(mask, tl.exp2(s - lse2[:, None]), 0.0)
        dp = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        if HAS_DO:
            v = load_tile(V + bh * Nk * Dv, offs_n, offs_dv, mask_n, mask_dv, Dv)
            dp += tl.dot(do, tl.trans(v), input_precision=PREC)
        if HAS_EXTRA:
            dp += tl.load(EXTRA + b * Nq * Nk + offs_m.to(tl.int64)[:, None] * Nk + offs_n[None, :],
                          mask=mask, other=0.0).to(tl.float32)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC)
    tl.store(DQ + bh * Nq * D + offs_m[:, None] * D + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=mask_m[:, None] & mask_d[None, :])


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
    launch(_attention_fwd_kernel)[grid](
        q, k, v if v is not None else q, out if out is not None else q, lse, float(scale), *sizes, **kw)


@functools.lru_cache(maxsize=256)
def fwd_plan(BH: int, Nq: int, D: int, Dv: int, has_v: bool, dtype: torch.dtype, dev: int) -> tuple[tuple, dict]:
    """(grid, launch keywords) of the forward for one shape on device index `dev`, built once
    (tiles, grid and a dozen keywords cost microseconds per call)."""
    cfg = attention_config(pad(D), pad(Dv), dtype, "fwd", device_facts(dev)[0])
    grid = check_grid("attention_fwd", (cdiv(Nq, cfg.block_m), BH))
    return grid, dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(D), BLOCK_DV=pad(Dv),
                      HAS_V=has_v, PREC=dot_precision(dtype), num_warps=cfg.num_warps,
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


def attention_bwd(q, k, v, out, lse, dout, dlse, scale, dp_extra=None, *, checked: bool = False):
    """(dq, dk, dv) of attention_fwd, each in q.dtype and shaped like its input.

    dout (B, H, Nq, Dv) or None (zero), dlse (B, H, Nq) or None: gradient of the returned lse
    (adds P * dlse to dZ). dp_extra (B, Nq, Nk) or None: added to dP of every head (and
    rowsum(P * dp_extra) to delta), the head-mean probability gradient of cross attention.
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
        dp_extra = dp_extra.contiguous()
    sizes = (float(scale), H, Nq, Nk, D, Dv)
    grid_q, grid_k, pre, kw_q, kw_k = _bwd_launch(B * H, Nq, Nk, D, Dv, q.dtype, q.get_device(),
                                                 dout is not None, dp_extra is not None, dlse is not None)
    do = dout if dout is not None else dummy
    extra = dp_extra if dp_extra is not None else dummy
    delta = torch.empty(B, H, Nq, device=q.device, dtype=torch.float32)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    launch(_attention_bwd_preprocess_kernel)[grid_q](
        q, k, v, out if out is not None else dummy, do, lse,
        dlse if dlse is not None else dummy, extra, delta, *sizes, **pre)
    launch(_attention_bwd_dq_kernel)[grid_q](
        q, k, v, do, lse, delta, extra, dq, *sizes, **kw_q)
    launch(_attention_bwd_dkdv_kernel)[grid_k](
        q, k, v, do, lse, delta, extra, dk, dv, *sizes, **kw_k)
    return dq, dk, dv


@functools.lru_cache(maxsize=256)
def _bwd_launch(BH: int, Nq: int, Nk: int, D: int, Dv: int, dtype: torch.dtype, dev: int, has_do: bool,
                has_extra: bool, has_dlse: bool) -> tuple:
    """(dq grid, dkdv grid, preprocess / dq / dkdv launch keywords) of the backward for one
    shape, built once (the same numbers every call; building them cost microseconds)."""
    arch = device_facts(dev)[0]
    flags = dict(HAS_DO=has_do, HAS_EXTRA=has_extra, PREC=dot_precision(dtype))

    def tiles(kind):
        cfg = attention_config(pad(D), pad(Dv), dtype, kind, arch)
        return cfg, dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(D),
                         BLOCK_DV=pad(Dv), num_warps=cfg.num_warps, num_stages=cfg.num_stages, **flags)
    cfg_q, kw_q = tiles("dq")
    cfg_k, kw_k = tiles("dkdv")
    grid_q = check_grid("attention_bwd", (cdiv(Nq, cfg_q.block_m), BH))
    pre = dict(kw_q, HAS_DLSE=has_dlse, EXACT=exact_delta(Nk))
    return grid_q, (cdiv(Nk, cfg_k.block_n), BH), pre, kw_q, kw_k


def aot_specs(arch: int) -> list:
    """The variants of this file's kernels that the launchers select on compute capability
    `arch`, for the compile report (kernels/compile_report.py)."""
    specs = []
    for dtype in SUPPORTED_DTYPES:
        for d in AOT_HEAD_DIMS:
            t, prec = ptr(dtype), dot_precision(dtype)
            sizes = dict(scale="fp32", Nq="i32", Nk="i32")
            cfg = attention_config(pad(d), pad(d), dtype, "fwd", arch)
            for has_v in (True, False):
                specs.append(KernelSpec(
                    _attention_fwd_kernel, dtype,
                    dict(Q=t, K=t, V=t, O=t, LSE="*fp32", **sizes),
                    dict(D=d, Dv=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(d),
                         BLOCK_DV=pad(d), HAS_V=has_v, PREC=prec),
                    cfg.num_warps, cfg.num_stages, f"D={d}" + ("" if has_v else " lse only")))
            bsizes = dict(sizes, H="i32")
            for extra in (False, True):
                label = f"D={d}" + (" dprobs" if extra else "")
                cfg = attention_config(pad(d), pad(d), dtype, "dq", arch)
                tiles = dict(D=d, Dv=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                             BLOCK_D=pad(d), BLOCK_DV=pad(d))
                # The O-based delta (long key rows) and the exact one (short rows, exact_delta).
                specs += [KernelSpec(
                    _attention_bwd_preprocess_kernel, dtype,
                    dict(Q=t, K=t, V=t, O=t, DO=t, LSE="*fp32", DLSE="*fp32", EXTRA="*fp32",
                         DELTA="*fp32", **bsizes),
                    dict(tiles, HAS_DO=True, HAS_DLSE=not extra, HAS_EXTRA=extra,
                         EXACT=exact, PREC=prec),
                    cfg.num_warps, cfg.num_stages, label + (" exact delta" if exact else ""))
                    for exact in (False, True)]
                specs.append(KernelSpec(
                    _attention_bwd_dq_kernel, dtype,
                    dict(Q=t, K=t, V=t, DO=t, LSE="*fp32", DELTA="*fp32", EXTRA="*fp32", DQ=t,
                         **bsizes),
                    dict(tiles, HAS_DO=True, HAS_EXTRA=extra, PREC=prec),
                    cfg.num_warps, cfg.num_stages, label))
                cfg = attention_config(pad(d), pad(d), dtype, "dkdv", arch)
                specs.append(KernelSpec(
                    _attention_bwd_dkdv_kernel, dtype,
                    dict(Q=t, K=t, V=t, DO=t, LSE="*fp32", DELTA="*fp32", EXTRA="*fp32", DK=t,
                         DV=t, **bsizes),
                    dict(D=d, Dv=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(d),
                         BLOCK_DV=pad(d), HAS_DO=True, HAS_EXTRA=extra, PREC=prec),
                    cfg.num_warps, cfg.num_stages, label))
    return specs
