"""Box tokens outside the ViT: the word embedding over coordinate bins, the box-refining
transformer with its trajectory memory, and the bin mapping back to coordinates (DESIGN.md 1.4).

Coordinates are the box corners (x1, y1, x2, y2) normalized to the search crop, [0, 1]. Each
is quantized into n_bins bins with centres k / (n_bins - 1), k = 0 .. n_bins - 1, and embedded
by one shared word embedding plus a per-coordinate embedding, so a box is 4 tokens.

Refiner: the trajectory memory (the last T boxes, in the current crop's coordinates, embedded
the same way) and the 4 denoised box tokens form one sequence of (T + 1) * 4 tokens with a time
embedding per step. Its layers are pre-norm transformer layers with block-causal self-attention
(a token sees the tokens of its own and earlier steps): the trajectory tokens attend only to the
past and the box tokens, last, attend to the whole trajectory (fasttrack's reading of the
paper's "self-attention and cross-attention" over the memory).

Mapping: logits_k = s <LN(r), E_k> / C for each refined token r and bin embedding E_k, with a
learned scale s; softmax over bins; the coordinate is the expectation of the bin centres
(soft-argmax, which keeps the output continuous and differentiable). s starts at 20 sqrt(2):
for r = E_k with the sinusoidal init, <LN(r), E_k> ~ sqrt(C) sqrt(C / 2), so the peak logit is
about 20 and the off-peak logits (spread ~ 20 / sqrt(C / 2)) leave a tail mass that does not pull
the soft-argmax towards the middle of the range; a scale of 1 / sqrt(C) leaves the softmax so
flat that every coordinate drifts to 0.5. The softmax score is the mean over the 4 coordinates
of the top probability; a small MLP on the pooled tokens predicts the IoU score.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["BoxEmbedding", "BoxRefiner", "BinMapping", "block_causal_mask", "sinusoidal_bins"]


def sinusoidal_bins(n_bins: int, dim: int) -> torch.Tensor:
    """(n_bins, dim) initial bin embeddings: cos/sin of the bin centre p in [0, 1] at dim/2
    frequencies spaced geometrically from pi (one half-period over the range) to
    pi * (n_bins - 1) (two bins per period). Their dot product sum_j cos(w_j (p - p')) peaks at
    p = p' with a width of a few bins, so decoding an embedded box by similarity returns it: a
    sensible starting point for training and a stable one for random-weight demos."""
    half = dim // 2
    p = torch.linspace(0.0, 1.0, n_bins, dtype=torch.float64)[:, None]
    top = max(n_bins - 1, 1)
    freqs = math.pi * torch.logspace(0.0, math.log10(top), max(half, 1), dtype=torch.float64)
    out = torch.zeros(n_bins, dim, dtype=torch.float64)
    out[:, 0:2 * half:2] = torch.cos(p * freqs)
    out[:, 1:2 * half:2] = torch.sin(p * freqs)
    return out.float()


class BoxEmbedding(nn.Module):
    """Box word embedding. forward(xyxy (..., 4) in [0, 1]) -> (..., 4, C)."""

    def __init__(self, n_bins: int, dim: int, init_std: float = 0.02):
        super().__init__()
        self.n_bins = n_bins
        self.word = nn.Embedding(n_bins, dim)
        self.coord = nn.Parameter(torch.zeros(4, dim))
        with torch.no_grad():
            self.word.weight.copy_(sinusoidal_bins(n_bins, dim))
            nn.init.trunc_normal_(self.coord, std=init_std)

    def bins(self, xyxy: torch.Tensor) -> torch.Tensor:
        """(..., 4) coordinates -> (..., 4) long bin indices (nearest centre, clamped)."""
        return torch.round(xyxy.clamp(0.0, 1.0) * (self.n_bins - 1)).long()

    def centers(self, dtype=torch.float32, device=None) -> torch.Tensor:
        return torch.linspace(0.0, 1.0, self.n_bins, dtype=dtype, device=device)

    def forward(self, xyxy: torch.Tensor) -> torch.Tensor:
        return self.word(self.bins(xyxy)) + self.coord


def block_causal_mask(steps: int, per_step: int, device=None) -> torch.Tensor:
    """(steps * per_step,)^2 bool mask, True where query token i may attend to key token j:
    step(j) <= step(i)."""
    step = torch.arange(steps * per_step, device=device) // per_step
    return step[None, :] <= step[:, None]


class RefineLayer(nn.Module):
    """Pre-norm transformer layer: x + Attn(LN(x), mask), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(round(dim * mlp_ratio))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(a.transpose(1, 2).reshape(B, N, C))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class BoxRefiner(nn.Module):
    """forward(box_tokens (B, 4, C), traj_tokens (B, T, 4, C)) -> refined (B, 4, C), layer-
    normalized. T must equal traj_len (the memory is always full: init fills it with the
    first box)."""

    def __init__(self, dim: int, depth: int, heads: int, traj_len: int, mlp_ratio: float = 4.0,
                 eps: float = 1e-6, init_std: float = 0.02):
        super().__init__()
        self.traj_len = traj_len
        self.time = nn.Parameter(torch.zeros(traj_len + 1, 1, dim))
        nn.init.trunc_normal_(self.time, std=init_std)
        self.layers = nn.ModuleList(RefineLayer(dim, heads, mlp_ratio, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.register_buffer("mask", block_causal_mask(traj_len + 1, 4), persistent=False)

    def forward(self, box_tokens: torch.Tensor, traj_tokens: torch.Tensor) -> torch.Tensor:
        B, T = traj_tokens.shape[:2]
        if T != self.traj_len:
            raise ValueError(f"traj_tokens must hold {self.traj_len} steps, got {T}")
        seq = torch.cat([traj_tokens + self.time[:T], (box_tokens + self.time[T])[:, None]], 1)
        x = seq.flatten(1, 2)
        for layer in self.layers:
            x = layer(x, self.mask)
        return self.norm(x[:, -4:])


class BinMapping(nn.Module):
    """Similarity to the bin embeddings -> coordinates and scores.

    forward(refined (B, 4, C), word (n_bins, C)) -> dict with logits (B, 4, n_bins), xyxy (B, 4)
    soft-argmax coordinates in [0, 1], softmax_score (B,) and iou_score (B,) in (0, 1)."""

    INIT_SCALE = 20.0 * math.sqrt(2.0)

    def __init__(self, dim: int):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(self.INIT_SCALE))
        self.iou1 = nn.Linear(dim, dim)
        self.iou2 = nn.Linear(dim, 1)

    def forward(self, refined: torch.Tensor, word: torch.Tensor) -> dict:
        C = refined.shape[-1]
        logits = torch.matmul(refined, word.t()) * (self.logit_scale / C)
        probs = logits.float().softmax(-1)
        centers = torch.linspace(0.0, 1.0, word.shape[0], device=word.device, dtype=torch.float32)
        xyxy = torch.matmul(probs, centers)
        softmax_score = probs.amax(-1).mean(-1)
        iou = torch.sigmoid(self.iou2(F.relu(self.iou1(refined.mean(1))))).squeeze(-1).float()
        return {"logits": logits, "xyxy": xyxy, "softmax_score": softmax_score, "iou_score": iou}
