"""The "torch" backend: memory-lean PyTorch, the CPU path and the fallback everywhere.

attention on the CPU runs PyTorch's CPU flash kernel (the aten backend's functions); elsewhere,
and for the other ops, the chunked code below.

It implements the primitives of docs/BACKENDS.md with the same factorization as the fused
kernels (DESIGN 1.1-1.3) but chunked over queries instead of tiled: only a
(B, H, chunk, Nk) slab of probabilities exists at a time, recomputed from (q, k, lse) in the
backward, so self_cross at N=16384 needs O(N (D + T)) memory plus one slab, never N x N.

Numerics: half inputs are upcast per chunk and accumulated in float32; float64 stays float64.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

NAME = "torch"

# Bytes one probability slab may take. 32 MiB keeps slabs cache-friendly on CPU and tiny next
# to a GPU's memory, while chunks stay large enough (>= 50 rows at N=16384, H=10) for BLAS.
CHUNK_BYTES = int(os.environ.get("FASTTRACK_TORCH_CHUNK_BYTES", 32 * 2**20))


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _chunks(q: torch.Tensor, nk: int):
    """Query ranges [i0, i1) such that one (B, H, rows, Nk) slab fits CHUNK_BYTES."""
    b, h, nq = q.shape[0], q.shape[1], q.shape[2]
    elem = 8 if q.dtype == torch.float64 else 4
    rows = max(1, CHUNK_BYTES // max(1, b * h * nk * elem))
    for i0 in range(0, nq, rows):
        yield i0, min(nq, i0 + rows)


def reasons(op: str, *tensors) -> list[str]:
    """The torch backend takes every valid input."""
    return []


def _logits(qc, k, scale):
    """s q k^T for one query chunk; the scale goes on the (rows, D) side, not the (rows, Nk) one."""
    return torch.matmul(qc * scale, k.transpose(-1, -2))


def _probs(qc, k, lse_c, scale):
    """P = exp(s q k^T - L) for one query chunk: (B, H, rows, Nk) in the accumulation dtype.
    In place on the logits slab: the slab is the only large buffer the backend allocates."""
    return _logits(qc, k, scale).sub_(lse_c.unsqueeze(-1)).exp_()


def _softmax_with_lse(qc, k, scale):
    """(P, L) for one query chunk whose rows are complete: lse and probabilities from one slab.

    Written out instead of torch.logsumexp + exp: those allocate two more slab-sized
    temporaries, here everything after the matmul happens in place (max-shifted exp, so no
    overflow; L = m + log(sum))."""
    z = _logits(qc, k, scale)
    m = z.amax(dim=-1, keepdim=True)
    z.sub_(m).exp_()
    ssum = z.sum(dim=-1, keepdim=True)
    z.div_(ssum)
    return z, (m + ssum.log()).squeeze(-1)


def lse_fwd(q, k, scale):
    """Row log-sum-exp of s q k^T: (B, H, Nq), float32 (float64 for float64 inputs)."""
    acc = _acc(q)
    kf = k.to(acc)
    lse = torch.empty(q.shape[:3], dtype=acc, device=q.device)
    for i0, i1 in _chunks(q, k.shape[2]):
        lse[:, :, i0:i1] = _softmax_with_lse(q[:, :, i0:i1].to(acc), kf, scale)[1]
    return lse


def _cpu_flash(*tensors) -> bool:
    """Whether attention runs on PyTorch's CPU flash kernel (fasttrack.ops.aten_backend):
    tiled like the chunked path below, one fused kernel, and the slab never exists."""
    return all(t is None or t.device.type == "cpu" for t in tensors)


def attention_fwd(q, k, v, scale):
    """out (B, H, Nq, Dv) in q.dtype and lse (B, H, Nq). On the CPU: PyTorch's CPU flash kernel."""
    if _cpu_flash(q, k, v):
        from . import aten_backend
        return aten_backend.attention_fwd(q, k, v, scale)
    acc = _acc(q)
    kf, vf = k.to(acc), v.to(acc)
    out = torch.empty(*q.shape[:3], v.shape[3], dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:3], dtype=acc, device=q.device)
    for i0, i1 in _chunks(q, k.shape[2]):
        p, lse[:, :, i0:i1] = _softmax_with_lse(q[:, :, i0:i1].to(acc), kf, scale)
        out[:, :, i0:i1] = torch.matmul(p, vf).to(q.dtype)
    return out, lse


def attention_bwd(q, k, v, out, lse, dout, dlse, scale, dp_extra=None):
    """FlashAttention-2 backward, chunked over queries: (dq, dk, dv) in the input dtypes.

    dZ = P * (dP - delta + dlse) with dP = dO V^T (+ dp_extra, shared by all heads) and
    delta = rowsum(dO * O) (+ rowsum(P * dp_extra)). dp_extra (B, Nq, Nk) carries the
    gradient of a head-mean map (cross_attention's probs). On the CPU without dp_extra: PyTorch's
    CPU flash backward, with the lse gradient through an augmented column (aten_backend)."""
    if dp_extra is None and _cpu_flash(q, k, v, out, lse, dout, dlse):
        from . import aten_backend
        return aten_backend.attention_bwd(q, k, v, out, lse, dout, dlse, scale)
    acc = _acc(q)
    kf, vf = k.to(acc), v.to(acc)
    dq = torch.empty_like(q)
    dk = torch.zeros(k.shape, dtype=acc, device=k.device)
    dv = torch.zeros(v.shape, dtype=acc, device=v.device)
    for i0, i1 in _chunks(q, k.shape[2]):
        qc = q[:, :, i0:i1].to(acc)
        p = _probs(qc, kf, lse[:, :, i0:i1].to(acc), scale)
        corr = torch.zeros(p.shape[:3], dtype=acc, device=q.device)
        dp = torch.zeros_like(p)
        if dout is not None:
            doc = dout[:, :, i0:i1].to(acc)
            dp += torch.matmul(doc, vf.transpose(-1, -2))
            corr += (doc * out[:, :, i0:i1].to(acc)).sum(-1)
            dv += torch.matmul(p.transpose(-1, -2), doc)
        if dp_extra is not None:
            extra = dp_extra[:, i0:i1].to(acc).unsqueeze(1)
            dp += extra
            corr += (p * extra).sum(-1)
        if dlse is not None:
            corr -= dlse[:, :, i0:i1].to(acc)
        # dv has consumed p above, so the slab can be overwritten by dZ in place.
        dz = p.mul_(dp.sub_(corr.unsqueeze(-1)))
        dq[:, :, i0:i1] = (torch.matmul(dz, kf) * scale).to(q.dtype)
        dk += torch.matmul(dz.transpose(-1, -2), qc) * scale
    return dq, dk.to(k.dtype), dv.to(v.dtype)


def self_cross_fwd(q, k, cross, lse, scale):
    """(1/H) sum_h P_h^T C: (B, Nk, T) in cross.dtype."""
    return _self_cross(q, k, cross, lse, scale)[0]


def self_cross_lse_fwd(q, k, cross, scale):
    """self_cross with the lse computed on the fly: (out (B, Nk, T), lse (B, H, Nq)).

    A query chunk holds complete rows, so each slab yields its own lse before it is
    exponentiated: one pass over q k^T instead of lse_fwd + self_cross_fwd's two."""
    return _self_cross(q, k, cross, None, scale)


def _self_cross(q, k, cross, lse, scale):
    # The heads share C, so sum_h P_h^T C = (sum_h P_h)^T C: one (B, Nk, rows) x (B, rows, T)
    # product per chunk instead of H.
    acc = _acc(q)
    kf = k.to(acc)
    h = q.shape[1]
    out = torch.zeros(k.shape[0], k.shape[2], cross.shape[2], dtype=acc, device=q.device)
    lse_out = torch.empty(q.shape[:3], dtype=acc, device=q.device) if lse is None else lse
    for i0, i1 in _chunks(q, k.shape[2]):
        qc = q[:, :, i0:i1].to(acc)
        if lse is None:
            p, lse_out[:, :, i0:i1] = _softmax_with_lse(qc, kf, scale)
        else:
            p = _probs(qc, kf, lse[:, :, i0:i1].to(acc), scale)
        out += torch.matmul(p.sum(1).transpose(-1, -2), cross[:, i0:i1].to(acc))
    return (out / h).to(cross.dtype), lse_out


def self_cross_bwd(q, k, cross, lse, dout, scale, lse_given):
    """Backward of self_cross (DESIGN 1.3, docs/BACKENDS.md): (dq, dk, dcross, dlse or None).

    Per head, with G = dout: A = P G; dcross = mean_h A; delta = (1/H) rowsum(C * A);
    dP = (1/H) C G^T; dZ = P (dP - delta) (softmax backward) or P dP (lse given, dlse = -delta).
    """
    acc = _acc(q)
    h = q.shape[1]
    if dout is None:
        dout = torch.zeros(k.shape[0], k.shape[2], cross.shape[2], dtype=cross.dtype, device=q.device)
    kf, g = k.to(acc), dout.to(acc)
    dq = torch.empty_like(q)
    dk = torch.zeros(k.shape, dtype=acc, device=k.device)
    dcross = torch.empty_like(cross)
    dlse = torch.empty(q.shape[:3], dtype=lse.dtype, device=q.device) if lse_given else None
    for i0, i1 in _chunks(q, k.shape[2]):
        qc = q[:, :, i0:i1].to(acc)
        cc = cross[:, i0:i1].to(acc)
        p = _probs(qc, kf, lse[:, :, i0:i1].to(acc), scale)            # (B, H, r, Nk)
        a = torch.matmul(p, g.unsqueeze(1))                              # (B, H, r, T)
        dcross[:, i0:i1] = a.mean(1).to(cross.dtype)
        delta = (cc.unsqueeze(1) * a).sum(-1) / h                        # (B, H, r)
        dp = torch.matmul(cc, g.transpose(-1, -2)).unsqueeze(1) / h      # (B, 1, r, Nk)
        if lse_given:
            dz = p.mul_(dp)
            dlse[:, :, i0:i1] = (-delta).to(dlse.dtype)
        else:
            dz = p.mul_(dp - delta.unsqueeze(-1))
        dq[:, :, i0:i1] = (torch.matmul(dz, kf) * scale).to(q.dtype)
        dk += torch.matmul(dz.transpose(-1, -2), qc) * scale
    return dq, dk.to(k.dtype), dcross, dlse


def cross_attention_fwd(q, k, v, scale):
    """out (B, H, Nq, Dv), probs (B, Nq, Nk) head-mean, both in q.dtype, and lse (B, H, Nq)."""
    acc = _acc(q)
    kf, vf = k.to(acc), v.to(acc)
    out = torch.empty(*q.shape[:3], v.shape[3], dtype=q.dtype, device=q.device)
    probs = torch.empty(q.shape[0], q.shape[2], k.shape[2], dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:3], dtype=acc, device=q.device)
    for i0, i1 in _chunks(q, k.shape[2]):
        p, lse[:, :, i0:i1] = _softmax_with_lse(q[:, :, i0:i1].to(acc), kf, scale)
        out[:, :, i0:i1] = torch.matmul(p, vf).to(q.dtype)
        probs[:, i0:i1] = p.mean(1).to(q.dtype)
    return out, probs, lse


def cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale):
    """Attention backward with the head-mean probs' gradient added to every head's dP:
    dP_h = dO_h V^T + dprobs / H (DESIGN 1.3's "one kernel family")."""
    extra = None if dprobs is None else dprobs / q.shape[1]
    return attention_bwd(q, k, v, out, lse, dout, None, scale, dp_extra=extra)


def box_branch_fwd(b, k, v, weights, eps):
    """b_next (B, Nq, C): the DeTrack box branch (fasttrack.trackers.detrack.box_branch) with the
    rows of all targets flattened into (B*Nq, C) matmuls, fused bias / residual addmm's and SDPA
    on the strided K/V views, no per-target loop. weights in
    fasttrack.ops.limits.BOX_BRANCH_WEIGHTS order, eps = (LN1, LN2) epsilons."""
    ln1_w, ln1_b, wq, bq, wo, bo, ln2_w, ln2_b, w1, c1, w2, c2, wn1, n1, wn2, n2 = weights
    B, nq, C = b.shape
    H, D = k.shape[1], k.shape[3]
    x = b.reshape(B * nq, C)
    h = F.layer_norm(x, (C,), ln1_w, ln1_b, eps[0])
    q = torch.addmm(bq, h, wq.t()).view(B, nq, H, D).transpose(1, 2)
    a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B * nq, C)
    b1 = torch.addmm(bo, a, wo.t()).add_(x)
    hid = F.gelu(torch.addmm(c1, F.layer_norm(b1, (C,), ln2_w, ln2_b, eps[1]), w1.t()))
    b2 = torch.addmm(c2, hid, w2.t()).add_(b1)
    eps_hat = torch.addmm(n2, torch.relu_(torch.addmm(n1, b2, wn1.t())), wn2.t())
    return b2.sub_(eps_hat).view(B, nq, C)
