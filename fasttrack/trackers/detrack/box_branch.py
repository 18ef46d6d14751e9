"""Reference box branch of one DeTrack denoising block (DESIGN.md 1.4).

The 4 box tokens b (x1, y1, x2, y2 of the box, embedded) read the search tokens of the block and
lose one step of noise:

    b'  = b  + Proj(Attn(queries Wq LN1(b), keys K_x, values V_x))
    b'' = b' + FC2(GELU(FC1(LN2(b'))))
    eps = N2(ReLU(N1(b'')))                    (NoisePred: 2-layer MLP, ReLU)
    b_next = b'' - eps

K_x, V_x are the keys and values that the block's visual attention already computed for the
search tokens (fasttrack's reading of "box queries attending to the search tokens"): the box
branch owns only its query projection, so its cost is that of 4 tokens (about 12 C^2 MACs per
token) and never re-projects the few hundred search tokens. The box tokens never write into
the visual stream (one-way attention).

This module is the plain PyTorch reference: every step is a separate op. The fused one-launch
version lives in fasttrack.trackers.detrack.fused (`fasttrack.patch` swaps it in).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BoxBranch", "check_box_branch_inputs"]



def autocast_on(t: torch.Tensor) -> bool:
    """Whether autocast is active for t's device type (False for devices autocast does not
    know, such as meta)."""
    try:
        return torch.is_autocast_enabled(t.device.type)
    except RuntimeError:
        return False

class BoxBranch(nn.Module):
    """Box branch of one denoising block.

    Args:
        dim: channels C of the box tokens (and of the visual tokens).
        heads: attention heads H; C must be divisible by H (head dim D = C / H).
        mlp_ratio: hidden width of the FFN is round(C * mlp_ratio).
        noise_hidden: hidden width of the NoisePred MLP (default C).
        eps: LayerNorm epsilon.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, noise_hidden: int | None = None,
                 eps: float = 1e-6):
        super().__init__()
        if dim <= 0 or heads <= 0 or dim % heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        hidden = int(round(dim * mlp_ratio))
        noise_hidden = dim if noise_hidden is None else int(noise_hidden)
        if hidden <= 0 or noise_hidden <= 0:
            raise ValueError(f"mlp_ratio ({mlp_ratio}) and noise_hidden ({noise_hidden}) must give "
                             "positive widths")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.hidden, self.noise_hidden = hidden, noise_hidden
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.q = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.noise1 = nn.Linear(dim, noise_hidden)
        self.noise2 = nn.Linear(noise_hidden, dim)

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim)

    def forward(self, b: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """b (B, Nq, C) box tokens; k, v (B, H, Ns, D) keys/values of the search tokens (any
        strides). Returns b_next (B, Nq, C). Under autocast k and v come from autocast matmuls
        while b is the float32 residual stream: they are brought to b's dtype first (the
        matmuls below autocast again)."""
        if autocast_on(b):
            k, v = k.to(b.dtype), v.to(b.dtype)
        check_box_branch_inputs(b, k, v, self.dim, self.heads)
        B, nq, C = b.shape
        q = self.q(self.norm1(b)).view(B, nq, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale      # (B, H, Nq, Ns)
        attn = torch.matmul(scores.softmax(dim=-1), v)                    # (B, H, Nq, D)
        b1 = b + self.proj(attn.transpose(1, 2).reshape(B, nq, C))
        b2 = b1 + self.fc2(F.gelu(self.fc1(self.norm2(b1))))
        eps_hat = self.noise2(F.relu(self.noise1(b2)))
        return b2 - eps_hat


def check_box_branch_inputs(b, k, v, dim: int, heads: int) -> None:
    """ValueError/TypeError naming the argument when b (B, Nq, C), k, v (B, H, Ns, C/H) do not
    fit a box branch of width `dim` with `heads` heads."""
    for name, t in (("b", b), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got {t.dtype}")
    if b.dim() != 3 or b.shape[-1] != dim or b.shape[1] < 1:
        raise ValueError(f"b must have shape (B, Nq, {dim}) with Nq >= 1, got {tuple(b.shape)}")
    want = (b.shape[0], heads, k.shape[2] if k.dim() == 4 else -1, dim // heads)
    for name, t in (("k", k), ("v", v)):
        if t.dim() != 4 or tuple(t.shape) != want or t.shape[2] < 1:
            raise ValueError(f"{name} must have shape (B={b.shape[0]}, H={heads}, Ns>=1, "
                             f"D={dim // heads}), got {tuple(t.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.dtype != b.dtype or v.dtype != b.dtype:
        raise TypeError(f"b, k, v must share one dtype, got {b.dtype}, {k.dtype}, {v.dtype}")
    if k.device != b.device or v.device != b.device:
        raise ValueError(f"b, k, v must be on one device, got {b.device}, {k.device}, {v.device}")
