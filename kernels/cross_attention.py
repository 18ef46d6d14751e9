"""Cross attention that also returns its head-mean probability map (DESIGN.md 1.2).

Shapes: q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv); out (B, H, Nq, Dv),
probs (B, Nq, Nk) = (1/H) sum_h softmax(s Q_h K_h^T) in q.dtype, lse (B, H, Nq) float32.
No (B, H, Nq, Nk) tensor is ever formed.
UNVERIFIED ON A GPU in its current form (one launch up to 128 keys, dprobs read at an aligned
stride by the one-pass attention backward): run only under TRITON_INTERPRET=1 and compiled ahead
of time for sm_80/90 (kernels/compile_report.py). The earlier form passed every GPU test on an
H200 (sm_90, triton 3.6; benchmarks/results/gpu-h200-2026-12-04/).
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._common import (AOT_HEAD_DIMS, AOT_TOKENS, LN2, LOG2E, SUPPORTED_DTYPES, KernelSpec,
                      check_grid, cross_config, dot_precision, launch, load_rows, load_tile,
                      pad, probs_config, ptr)
from ._common import cdiv, device_facts, fast_inputs_ok
from .attention import _check_qk, _check_v, _forward, attention_bwd

_LOG2E = float(LOG2E.value)


@triton.jit
def _cross_attention_fwd_kernel(
    Q, K, V, O, PROBS, LSE, qk_scale, H, Nq, Nk, D: tl.constexpr, Dv: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_DV: tl.constexpr, NEG_Q: tl.constexpr, PREC: tl.constexpr,
):
    """Per head h: P_h = softmax(s Q_h K_h^T), O_h = P_h V_h, L_h = log rowsum exp(s Q K^T);
    probs = (1/H) sum_h P_h accumulated in registers (the epilogue of DESIGN.md 1.2). The
    whole key row fits one tile (BLOCK_N >= Nk), so the softmax is exact in one pass; one
    (query block, batch) per program, heads looped inside: one launch for out, probs and lse.
    qk_scale = |s| log2(e) and NEG_Q negates q (exactly) for s < 0, so that the exponent is one
    FFMA per entry (attention._fwd_tile)."""
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_dv = tl.arange(0, BLOCK_DV)
    mask_m = offs_m < Nq
    mask_n = offs_n < Nk
    mask_dv = offs_dv < Dv
    probs = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for h in range(H):
        bh = b * H + h
        q = load_rows(Q + bh * Nq * D, offs_m, mask_m, D, BLOCK_D, True)
        if NEG_Q:
            q = -q
        k = load_rows(K + bh * Nk * D, offs_n, mask_n, D, BLOCK_D, True)
        v = load_rows(V + bh * Nk * Dv, offs_n, mask_n, Dv, BLOCK_DV, True)
        qk = tl.dot(q, tl.trans(k), input_precision=PREC)
        # Padded keys are zero rows (qk = 0); Nk >= 1 keeps every row max finite, and the
        # select after the exponential keeps a zero scale from making NaN of -inf * 0.
        m = tl.max(tl.where(mask_n[None, :], qk, float("-inf")), 1) * qk_scale
        p = tl.where(mask_n[None, :], tl.exp2(qk * qk_scale - m[:, None]), 0.0)
        l = tl.sum(p, 1)
        inv_l = 1.0 / l
        # Unnormalized P (max entry 1) into the value product, divided afterwards, as the
        # flash forward does; the normalized P feeds the head mean.
        o = tl.dot(p.to(v.dtype), v, input_precision=PREC) * inv_l[:, None]
        tl.store(O + bh * Nq * Dv + offs_m[:, None] * Dv + offs_dv[None, :],
                 o.to(O.dtype.element_ty), mask=mask_m[:, None] & mask_dv[None, :])
        tl.store(LSE + bh * Nq + offs_m, (m + tl.log2(l)) * LN2, mask=mask_m)
        probs += p * inv_l[:, None]
    tl.store(PROBS + b * Nq * Nk + offs_m.to(tl.int64)[:, None] * Nk + offs_n[None, :],
             (probs / H).to(PROBS.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _head_mean_probs_kernel(
    Q, K, LSE, PROBS, scale, H, Nq, Nk, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr,
):
    """probs[i, j] = (1/H) sum_h exp(s q_i.k_j - L_h[i]) from the lse of a flash forward, for
    the shapes the fused kernel does not take (_common.cross_config). One (query block, key
    block, batch) per program, heads looped inside."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < Nq
    mask_n = offs_n < Nk
    mask_d = offs_d < D
    qk_scale = scale * LOG2E
    probs = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for h in range(H):
        bh = b * H + h
        q = load_tile(Q + bh * Nq * D, offs_m, offs_d, mask_m, mask_d, D)
        k = load_tile(K + bh * Nk * D, offs_n, offs_d, mask_n, mask_d, D)
        lse2 = tl.load(LSE + bh * Nq + offs_m, mask=mask_m, other=0.0) * LOG2E
        s = tl.dot(q, tl.trans(k), input_precision=PREC) * qk_scale
        probs += tl.exp2(s - lse2[:, None])
    tl.store(PROBS + b * Nq * Nk + offs_m.to(tl.int64)[:, None] * Nk + offs_n[None, :],
             (probs / H).to(PROBS.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


def cross_attention_fwd(q, k, v, scale, *, checked: bool = False):
    """(out (B, H, Nq, Dv), probs (B, Nq, Nk), lse (B, H, Nq) float32); out and probs in
    q.dtype. Short key rows run fused in one kernel (heads looped per query block, probs
    accumulated in registers); other shapes (see _common.cross_config) run the flash forward
    and then the head-mean kernel (one more Q K^T pass). Neither forms (B, H, Nq, Nk).
    checked=True: the caller has checked the inputs (attention_fwd).
    """
    if not checked and not fast_inputs_ok(q, k, v, 4):
        _check_qk(q, k)
        _check_v(q, k, v)
    B, H, Nq, D = q.shape
    Nk, Dv = k.shape[2], v.shape[3]
    probs = torch.empty(B, Nq, Nk, device=q.device, dtype=q.dtype)
    fused, grid, kw = _fwd_plan(B, Nq, Nk, D, Dv, q.dtype, q.get_device())
    if not fused:
        out, lse = _forward(q, k, v, scale)
        launch(_head_mean_probs_kernel)[grid](
            q.contiguous(), k.contiguous(), lse, probs, float(scale), H, Nq, Nk, D, **kw)
        return out, probs, lse
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    out = torch.empty_like(q) if Dv == D else torch.empty(B, H, Nq, Dv, device=q.device, dtype=q.dtype)
    lse = torch.empty(B, H, Nq, device=q.device, dtype=torch.float32)
    launch(_cross_attention_fwd_kernel)[grid](
        q, k, v, out, probs, lse, abs(scale) * _LOG2E, H, Nq, Nk, D, Dv, NEG_Q=scale < 0, **kw)
    return out, probs, lse


@functools.lru_cache(maxsize=256)
def _fwd_plan(B: int, Nq: int, Nk: int, D: int, Dv: int, dtype: torch.dtype, dev: int) -> tuple:
    """(fused, grid, launch keywords) of the forward for one shape on device index `dev`: the
    fused kernel's, or the head-mean kernel's after the flash forward (_common.cross_config);
    built once."""
    arch = device_facts(dev)[0]
    prec = dot_precision(dtype)
    cfg = cross_config(pad(Nk), pad(D), pad(Dv), dtype, arch)
    if cfg is None:
        pcfg = probs_config(pad(D), dtype, arch)
        grid = check_grid("cross_attention_fwd", (cdiv(Nq, pcfg.block_m), cdiv(Nk, pcfg.block_n), B))
        return False, grid, dict(BLOCK_M=pcfg.block_m, BLOCK_N=pcfg.block_n, BLOCK_D=pad(D), PREC=prec,
                                 num_warps=pcfg.num_warps, num_stages=pcfg.num_stages)
    grid = check_grid("cross_attention_fwd", (cdiv(Nq, cfg.block_m), B))
    return True, grid, dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(D), BLOCK_DV=pad(Dv),
                            PREC=prec, num_warps=cfg.num_warps, num_stages=cfg.num_stages)


def cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale):
    """(dq, dk, dv) of cross_attention_fwd given dout (B, H, Nq, Dv) and dprobs (B, Nq, Nk),
    either None when unused: the flash backward with dP_h += dprobs / H for every head
    (BACKENDS.md), which also adds rowsum(P_h dprobs) / H to delta."""
    if not fast_inputs_ok(q, k, v, 4):
        _check_qk(q, k)
    B, H, Nq, _ = q.shape
    Nk = k.shape[2]
    if dprobs is not None and dprobs.shape != (B, Nq, Nk):
        raise ValueError(f"dprobs must have shape {(B, Nq, Nk)}, got {tuple(dprobs.shape)}")
    # dprobs is read as it is (no fp32 copy); the kernels scale it by 1/H as they load it.
    return attention_bwd(q, k, v, out, lse, dout, None, scale, dp_extra=dprobs, extra_scale=1.0 / H)


def aot_specs(arch: int) -> list:
    """Variants the launchers select on compute capability `arch` (compile report): the fused
    kernel where cross_config takes the shape, else the head-mean probability kernel (the flash
    forward it runs first is in attention.aot_specs)."""
    specs = []
    for dtype in SUPPORTED_DTYPES:
        t, prec = ptr(dtype), dot_precision(dtype)
        for d in AOT_HEAD_DIMS:
            pcfg = probs_config(pad(d), dtype, arch)
            specs.append(KernelSpec(
                _head_mean_probs_kernel, dtype,
                dict(Q=t, K=t, LSE="*fp32", PROBS=t, scale="fp32", H="i32", Nq="i32", Nk="i32"),
                dict(D=d, BLOCK_M=pcfg.block_m, BLOCK_N=pcfg.block_n, BLOCK_D=pad(d), PREC=prec),
                pcfg.num_warps, pcfg.num_stages, f"D={d}"))
            for nk in AOT_TOKENS:
                cfg = cross_config(pad(nk), pad(d), pad(d), dtype, arch)
                if cfg is None:
                    continue
                specs.append(KernelSpec(
                    _cross_attention_fwd_kernel, dtype,
                    dict(Q=t, K=t, V=t, O=t, PROBS=t, LSE="*fp32", qk_scale="fp32", H="i32",
                         Nq="i32", Nk="i32"),
                    dict(D=d, Dv=d, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=pad(d),
                         BLOCK_DV=pad(d), NEG_Q=False, PREC=prec),
                    cfg.num_warps, cfg.num_stages, f"D={d} Nk={nk}"))
    return specs
