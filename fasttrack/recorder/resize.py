"""Resizing recorded maps to the output grid (Rh, Rw) without ever forming an N x N map.

Notation (DESIGN 1.2): a self layer runs on an (h, w) grid, N = h w; the output grid has
M = Rh Rw pixels; S_r (N x N, rows = queries) is the layer's head-mean self-attention map.
DiffSeg-style resizing makes S_up (M x M): each query row is repeated to the output pixels that
nearest-neighbour upsampling maps onto it (matrix Nn, M x N, one 1 per row), and each row, seen
as an (h, w) image over keys, is bilinearly upsampled (matrix U, M x N, align_corners=False):

    S_up = Nn S_r U^T,     renormalized: S_up = Nn diag(n) S_r U^T,  n = 1 / (S_r u),  u = U^T 1

because row I of Nn S_r U^T sums to (S_r U^T 1)[pi(I)]. Hence, for the averaged cross map C (M x T),

    S_up^T C = U ( S_r^T ( n * Nn^T C ) )

Nn^T ("pool") sums the output pixels that share a source pixel; S_r^T X is fasttrack's fused
self_cross; U is a bilinear upsampling of an (h, w) map; S_r u is one attention pass with a single
value column u. Nothing larger than N (D + T) per head is formed.

Nearest and bilinear here are torch's F.interpolate modes "nearest" and "bilinear"
(align_corners=False, no antialias); the index map and u are computed by applying F.interpolate
itself to index / identity tensors, so they agree with it to the last bit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import ops

__all__ = ["as_grid", "resize_cross", "nearest_index", "pool", "bilinear_colsum", "self_cross_entry"]


def as_grid(resolution) -> tuple[int, int]:
    """resolution: int R (an R x R grid) or (Rh, Rw) -> (Rh, Rw)."""
    if isinstance(resolution, bool):
        raise TypeError(f"resolution must be an int or an (Rh, Rw) pair, got {resolution!r}")
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    if (not isinstance(resolution, (tuple, list)) or len(resolution) != 2
            or not all(isinstance(r, int) and not isinstance(r, bool) for r in resolution)):
        raise TypeError(f"resolution must be an int or an (Rh, Rw) pair of ints, got {resolution!r}")
    if min(resolution) <= 0:
        raise ValueError(f"resolution must be positive, got {tuple(resolution)}")
    return int(resolution[0]), int(resolution[1])


def resize_cross(probs: torch.Tensor, hw, grid) -> torch.Tensor:
    """Head-mean cross map (B, N, T) on an (h, w) grid -> (B, T, Rh, Rw), bilinear."""
    b, n, t = probs.shape
    x = probs.transpose(1, 2).reshape(b, t, hw[0], hw[1])
    if tuple(hw) == tuple(grid):
        return x
    return F.interpolate(x, size=grid, mode="bilinear", align_corners=False)


def _nearest_1d(r: int, big: int, device) -> torch.Tensor:
    src = torch.arange(r, dtype=torch.float32, device=device).view(1, 1, r)
    return F.interpolate(src, size=big, mode="nearest").view(big).round().long()


def nearest_index(hw, grid, device) -> torch.Tensor:
    """(M,) long: the (h, w)-grid pixel that nearest upsampling copies to each output pixel."""
    iy = _nearest_1d(hw[0], grid[0], device)
    ix = _nearest_1d(hw[1], grid[1], device)
    return (iy.view(-1, 1) * hw[1] + ix.view(1, -1)).reshape(-1)


def pool(cbar: torch.Tensor, hw, grid) -> torch.Tensor:
    """Nn^T C: (B, M, T) on the output grid -> (B, N, T), summing the output pixels that
    nearest upsampling fills from the same (h, w) pixel (the adjoint of nearest upsampling)."""
    idx = nearest_index(hw, grid, cbar.device)
    out = cbar.new_zeros(cbar.shape[0], hw[0] * hw[1], cbar.shape[2])
    return out.index_add(1, idx, cbar)


def _linear_colsum(r: int, big: int, device, dtype) -> torch.Tensor:
    # Row a of the upsampled identity is column a of the 1-D interpolation matrix (big x r).
    eye = torch.eye(r, dtype=dtype, device=device).unsqueeze(0)
    return F.interpolate(eye, size=big, mode="linear", align_corners=False).sum(-1).view(r)


def bilinear_colsum(hw, grid, device, dtype=torch.float32) -> torch.Tensor:
    """u = U^T 1 (N,): how much output mass bilinear upsampling gives each (h, w) pixel.
    Bilinear weights are products of 1-D linear weights, so u is an outer product."""
    uh = _linear_colsum(hw[0], grid[0], device, dtype)
    uw = _linear_colsum(hw[1], grid[1], device, dtype)
    return (uh.view(-1, 1) * uw.view(1, -1)).reshape(-1)


def self_cross_entry(q, k, lse, scale, cbar, hw, grid, renormalize: bool, backend: str) -> torch.Tensor:
    """S_up^T C for one recorded self layer call (module docstring).

    Args:
        q, k: (B, H, N, D) of the self layer; lse: (B, H, N) float32 or None (then computed);
        cbar: (B, M, T) averaged cross map on the output grid (float32/float64);
        hw: the layer's (h, w); grid: (Rh, Rw).
    Returns:
        (B, T, Rh, Rw) in cbar.dtype.
    """
    b, n = q.shape[0], q.shape[2]
    x = pool(cbar, hw, grid)
    if renormalize:
        u = bilinear_colsum(hw, grid, q.device, cbar.dtype)
        v = u.to(q.dtype).view(1, 1, n, 1).expand(b, q.shape[1], n, 1).contiguous()
        su, lse_u = ops.attention(q, k, v, scale=scale, backend=backend)  # P_h u per head
        # S_r u = (1/H) sum_h P_h u: every row sum of the resized map, before renormalization.
        x = x / su.to(cbar.dtype).mean(dim=1)
        if lse is None:
            lse = lse_u
    y = ops.self_cross(q, k, x.to(q.dtype), scale=scale, lse=lse, backend=backend)  # (B, N, T)
    y = y.to(cbar.dtype).transpose(1, 2).reshape(b, -1, hw[0], hw[1])
    if tuple(hw) == tuple(grid):
        return y
    return F.interpolate(y, size=grid, mode="bilinear", align_corners=False)
