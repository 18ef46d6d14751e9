"""fasttrack.ops: attention maps at the cost of fused attention.

Shapes (DESIGN section 1): q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv),
cross (B, Nq, T) the head-mean cross-attention map, lse (B, H, Nq) the row log-sum-exp.
D, Dv <= 128 on the fused backends; any N; float16, bfloat16, float32 (float64: torch backend).

Every function is differentiable in all tensor inputs and takes `backend="auto"` ("cuda",
"triton" or "torch" to force one; FASTTRACK_BACKEND also forces when the call says "auto") and
`scale=None`, meaning D ** -0.5. `fasttrack.ops.reference` holds the materializing references.
Enable `logging.getLogger("fasttrack.dispatch").setLevel(logging.DEBUG)` to see which backend
and kernel ran.

Host cost: in eager mode a call checks its arguments and picks a backend once per (shapes,
dtypes, devices, backend) and then only launches (fasttrack.ops.dispatch, _library); under
torch.compile each op is one opaque custom op.
"""
from __future__ import annotations

import torch

from . import checks, reference
from . import _library as _lib
from .dispatch import BACKENDS, BackendUnavailable, available, select
from .dispatch import check_backend as _check_backend

__all__ = ["attention", "self_cross", "harmonize", "cross_attention", "reference",
           "BACKENDS", "BackendUnavailable", "available"]


def attention(q, k, v, *, scale=None, backend="auto"):
    """Scaled dot-product attention that also returns the row log-sum-exp.

    Args:
        q: (B, H, Nq, D); k: (B, H, Nk, D); v: (B, H, Nk, Dv).
    Returns:
        out (B, H, Nq, Dv) in q.dtype; lse (B, H, Nq) float32 (float64 for float64 inputs),
        lse[b,h,i] = log sum_j exp(scale * q_i . k_j). Pass lse to `self_cross` to reuse it.
    """
    mode = _lib.mode(q, k, v)
    if mode:
        name = select("attention", backend, q, k, v, validate=checks.validate_attention)
        return _lib.attention_eager(q, k, v, checks.resolve_scale(scale, q.shape[-1]), backend, name, mode == 2)
    checks.validate_attention(q, k, v)
    s = checks.resolve_scale(scale, q.shape[-1])
    _check_backend(backend)
    return _lib.attention_op(q, k, v, s, backend)


def self_cross(q, k, cross, *, scale=None, lse=None, backend="auto"):
    """The head-mean self-attention map, transposed, applied to a cross map: S^T C.

    (1/H) sum_h P_h^T cross with P_h = softmax(scale q_h k_h^T) (DESIGN 1.1), never forming the
    (Nq, Nk) map. With `lse` from `attention(q, k, ...)`, P_h = exp(scale q k^T - lse) and the
    normalization pass is skipped (lse is then an input: gradients flow into it).

    Args:
        q: (B, H, Nq, D); k: (B, H, Nk, D); cross: (B, Nq, T); lse: (B, H, Nq) or None.
    Returns:
        (B, Nk, T) in cross.dtype.
    """
    mode = _lib.mode(q, k, cross, lse)
    if mode:
        name = select("self_cross", backend, q, k, cross, lse, validate=checks.validate_self_cross)
        s = checks.resolve_scale(scale, q.shape[-1])
        return _lib.self_cross_eager(q, k, cross, lse, s, backend, name, mode == 2)
    checks.validate_self_cross(q, k, cross, lse)
    s = checks.resolve_scale(scale, q.shape[-1])
    _check_backend(backend)
    out, _ = _lib.self_cross_op(q, k, cross, lse, s, backend)
    return out


def harmonize(q, k, cross, *, alpha=0.5, scale=None, lse=None, backend="auto"):
    """Diff-Tracker's attention harmonization: alpha * cross + (1 - alpha) * S^T cross.

    Args:
        q, k: (B, H, N, D) of a self-attention layer; cross: (B, N, T); alpha in [0, 1].
    Returns:
        (B, N, T) in cross.dtype.
    """
    a = checks.check_alpha(alpha)
    checks.validate_harmonize(q, k, cross, lse)
    sc = self_cross(q, k, cross, scale=scale, lse=lse, backend=backend)
    if a == 0.0:
        return sc
    return torch.lerp(sc, cross, a) if sc.dtype == cross.dtype else a * cross + (1 - a) * sc


def cross_attention(q, k, v, *, scale=None, backend="auto"):
    """Attention over a short key sequence (text tokens) that also returns its head-mean map.

    The map is made in the kernel's epilogue: no (B, H, Nq, Nk) tensor is kept.

    Args:
        q: (B, H, Nq, D); k: (B, H, Nk, D); v: (B, H, Nk, Dv), Nk up to 256 or more.
    Returns:
        out (B, H, Nq, Dv) and probs (B, Nq, Nk) = (1/H) sum_h softmax(scale q_h k_h^T),
        both in q.dtype.
    """
    mode = _lib.mode(q, k, v)
    if mode:
        name = select("cross_attention", backend, q, k, v, validate=checks.validate_attention)
        s = checks.resolve_scale(scale, q.shape[-1])
        out, probs, _ = _lib.cross_attention_eager(q, k, v, s, backend, name, mode == 2)
        return out, probs
    checks.validate_attention(q, k, v)
    s = checks.resolve_scale(scale, q.shape[-1])
    _check_backend(backend)
    out, probs, _ = _lib.cross_attention_op(q, k, v, s, backend)
    return out, probs
