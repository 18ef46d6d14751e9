"""Plain references that materialize everything: the oracle for tests and benchmarks.

These are deliberately naive: they form the full (B, H, Nq, Nk) probability tensor, compute in
float32 (float64 when the inputs are float64) and are differentiable through ordinary autograd,
so they share no code with the fused backends. Shapes:

    q (B, H, Nq, D)   k (B, H, Nk, D)   v (B, H, Nk, Dv)   cross (B, Nq, T)   lse (B, H, Nq)
"""
from __future__ import annotations

import torch

__all__ = ["attention", "self_cross", "harmonize", "cross_attention",
           "attention_ref", "self_cross_ref", "harmonize_ref", "cross_attention_ref"]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _scale(q: torch.Tensor, scale) -> float:
    return q.shape[-1] ** -0.5 if scale is None else float(scale)


def _logits(q, k, scale):
    ct = _compute_dtype(q)
    return torch.matmul(q.to(ct), k.to(ct).transpose(-1, -2)) * _scale(q, scale)


def attention(q, k, v, *, scale=None):
    """out = softmax(s q k^T) v, lse = logsumexp(s q k^T) over keys.

    Returns out (B, H, Nq, Dv) in q.dtype and lse (B, H, Nq) in float32 (float64 for float64).
    """
    z = _logits(q, k, scale)
    lse = torch.logsumexp(z, dim=-1)
    p = torch.softmax(z, dim=-1)
    out = torch.matmul(p, v.to(p.dtype))
    return out.to(q.dtype), lse


def self_cross(q, k, cross, *, scale=None, lse=None):
    """(1/H) sum_h P_h^T C: each query pixel i spreads its cross weights C[i] over the keys
    it attends to (DESIGN 1.1). P_h = softmax(s q k^T), or exp(s q k^T - lse) when lse is given.

    cross (B, Nq, T) -> (B, Nk, T) in cross.dtype.
    """
    z = _logits(q, k, scale)
    if lse is None:
        p = torch.softmax(z, dim=-1)
    else:
        p = torch.exp(z - lse.to(z.dtype).unsqueeze(-1))
    s_mean = p.mean(dim=1)  # (B, Nq, Nk): the head-mean self-attention map S
    out = torch.matmul(s_mean.transpose(-1, -2), cross.to(p.dtype))
    return out.to(cross.dtype)


def harmonize(q, k, cross, *, alpha=0.5, scale=None, lse=None):
    """alpha * C + (1 - alpha) * S^T C (Diff-Tracker's attention harmonization, DESIGN 1.1).

    cross (B, N, T) -> (B, N, T)."""
    sc = self_cross(q, k, cross, scale=scale, lse=lse)
    ct = _compute_dtype(cross)
    return (alpha * cross.to(ct) + (1.0 - alpha) * sc.to(ct)).to(cross.dtype)


def cross_attention(q, k, v, *, scale=None):
    """out = softmax(s q k^T) v and probs = (1/H) sum_h softmax(s q_h k_h^T).

    Returns out (B, H, Nq, Dv) in q.dtype and probs (B, Nq, Nk) in q.dtype."""
    z = _logits(q, k, scale)
    p = torch.softmax(z, dim=-1)
    out = torch.matmul(p, v.to(p.dtype))
    return out.to(q.dtype), p.mean(dim=1).to(q.dtype)


attention_ref = attention
self_cross_ref = self_cross
harmonize_ref = harmonize
cross_attention_ref = cross_attention
