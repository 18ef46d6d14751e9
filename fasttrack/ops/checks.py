"""Argument validation shared by every op: errors name the argument at fault.

Shape conventions (DESIGN section 1):
    q (B, H, Nq, D)   k (B, H, Nk, D)   v (B, H, Nk, Dv)   cross (B, Nq, T)   lse (B, H, Nq)
"""
from __future__ import annotations

import math

import torch

from .limits import TORCH

SUPPORTED_DTYPES = TORCH.dtypes  # what any op accepts at all (the torch backend's dtypes)


def check_tensor(name: str, x, ndim: int, dims: str, dtypes=SUPPORTED_DTYPES) -> None:
    """Type, rank, dtype (one of `dtypes`) and emptiness of one tensor argument, shaped `dims`
    (e.g. "(B, H, Nq, D)"). The one tensor check of the ops and of the kernel launchers."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {dims}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have rank {ndim} with shape {dims}, got shape {tuple(x.shape)}")
    if x.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must be one of {names}, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} has an empty dimension: shape {tuple(x.shape)} {dims}")


def _same(name_a: str, a: int, name_b: str, b: int, what: str) -> None:
    if a != b:
        raise ValueError(f"{what} mismatch: {name_a} has {a}, {name_b} has {b}")


def check_devices(**tensors) -> None:
    """All tensor arguments on one device (mixed CPU/CUDA is a ValueError naming both)."""
    items = [(n, t) for n, t in tensors.items() if isinstance(t, torch.Tensor)]
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"mixed devices: {first_name} is on {first.device}, {name} is on {t.device}")


def check_dtypes(**tensors) -> None:
    items = [(n, t) for n, t in tensors.items() if isinstance(t, torch.Tensor)]
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.dtype != first.dtype:
            raise TypeError(f"dtype mismatch: {first_name} is {first.dtype}, {name} is {t.dtype}")


def check_qk(q, k) -> None:
    check_tensor("q", q, 4, "(B, H, Nq, D)")
    check_tensor("k", k, 4, "(B, H, Nk, D)")
    _same("q", q.shape[0], "k", k.shape[0], "batch size B")
    _same("q", q.shape[1], "k", k.shape[1], "head count H")
    _same("q", q.shape[3], "k", k.shape[3], "head dim D")


def check_v(k, v) -> None:
    check_tensor("v", v, 4, "(B, H, Nk, Dv)")
    _same("k", k.shape[0], "v", v.shape[0], "batch size B")
    _same("k", k.shape[1], "v", v.shape[1], "head count H")
    _same("k", k.shape[2], "v", v.shape[2], "key count Nk")


def check_cross(q, cross) -> None:
    check_tensor("cross", cross, 3, "(B, Nq, T)")
    _same("q", q.shape[0], "cross", cross.shape[0], "batch size B")
    _same("q", q.shape[2], "cross", cross.shape[1], "query count Nq")


def check_lse(q, lse) -> None:
    if lse is None:
        return
    if not isinstance(lse, torch.Tensor):
        raise TypeError(f"lse must be a torch.Tensor of shape (B, H, Nq) or None, got {type(lse).__name__}")
    if lse.dim() != 3 or tuple(lse.shape) != tuple(q.shape[:3]):
        raise ValueError(f"lse must have shape (B, H, Nq) = {tuple(q.shape[:3])}, got {tuple(lse.shape)}")
    if lse.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"lse must be float32 (the row log-sum-exp of attention), got {lse.dtype}")
    if lse.device != q.device:
        raise ValueError(f"mixed devices: q is on {q.device}, lse is on {lse.device}")


def resolve_scale(scale, head_dim: int) -> float:
    """None means 1/sqrt(D), the softmax temperature of scaled dot-product attention."""
    if scale is None:
        return head_dim ** -0.5
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return float(scale)


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"alpha must be a float in [0, 1], got {type(alpha).__name__}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return float(alpha)


_FLOATS = frozenset(SUPPORTED_DTYPES)


def _fast_ok(q, k, x, x_rank: int) -> bool:
    """The common case in a handful of attribute reads: q, k 4-D and x (v or cross) of rank
    x_rank, all plain tensors of one supported dtype on one device, non-empty, B / H / D / N
    consistent. False sends the caller to the full checks, which say what is wrong."""
    try:
        bq, hq, nq, dq = q.shape
        bk, hk, nk, dk = k.shape
        xs = x.shape
        dt = q.dtype
        return (len(xs) == x_rank and bq == bk == xs[0] and hq == hk and dq == dk
                and (xs[1:3] == (hk, nk) if x_rank == 4 else xs[1] == nq)
                and dt in _FLOATS and k.dtype is dt and x.dtype is dt
                and q.device == k.device == x.device
                and bq * hq * nq * dq * nk != 0 and xs[-1] != 0)
    except (AttributeError, TypeError, ValueError):
        return False


def validate_attention(q, k, v) -> None:
    if _fast_ok(q, k, v, 4):
        return
    check_qk(q, k)
    check_v(k, v)
    check_dtypes(q=q, k=k, v=v)
    check_devices(q=q, k=k, v=v)


def validate_self_cross(q, k, cross, lse) -> None:
    if _fast_ok(q, k, cross, 3) and (lse is None or (type(lse) is torch.Tensor and lse.shape == q.shape[:3]
                                                      and lse.dtype in (torch.float32, torch.float64)
                                                      and lse.device == q.device)):
        return
    check_qk(q, k)
    check_cross(q, cross)
    check_dtypes(q=q, k=k, cross=cross)
    check_devices(q=q, k=k, cross=cross)
    check_lse(q, lse)


def validate_harmonize(q, k, cross, lse) -> None:
    validate_self_cross(q, k, cross, lse)
    # alpha*C + (1-alpha)*S^T C mixes rows of C (queries) with rows of S^T C (keys).
    _same("q", q.shape[2], "k", k.shape[2], "sequence length N (harmonize is self-attention)")
