"""DMTrack's diffusion module: noise -> a target-mask map on the search grid, conditioned on the
multi-modal search features F_s (the DMTrack paper, section 3.2, eqs. 3-5; DESIGN.md 1.6).

Signal: the mask m in [0, 1] on the G x G search-token grid (G = search_size / patch; 16 for
256 px), as x0 = scale (2 m - 1). Forward process: q(x_t | x0) = N(sqrt(abar_t) x0,
(1 - abar_t) I), cosine schedule (DeTrack's, abar(T) = 0 exactly). The denoiser f_theta
predicts the clean mask's logits l (x0_hat = scale (2 sigmoid(l) - 1)), not the noise: the
loss is on the mask (the paper's L_struct), and a mask from one step is usable.

    f_theta(x_t, t, c):  h0 = GELU(conv_x(x_t) + conv_c(c) + time(t))       G x G, width W
                         h1 = GELU(conv(GELU(conv_s2(h0))) + time'(t))       G/2, width 2W
                         h  = GELU(conv(cat[up(h1), h0]))                    G, width W
                         l  = conv1x1(h)                                     (the U: down, up, skip)
    c = conv1x1(LN(F_s)) (width W), the condition, encoded once per frame.

The input convolution of cat[x_t, c] is split into conv_x(x_t) + conv_c(c) (the same linear
map), so conv_c(c), the only part touching the C-wide features, runs once per frame for all K
samples and S steps; a step costs convolutions of width W and 2W only.

Sampling (test): K samples from the fixed noise bank `noise` (max_samples, 1, G, G; part of the
checkpoint, so a frame's mask is deterministic and a CUDA graph can replay it), DDIM with
eta = 0 over S steps t_k = T (S - k) / S (k = 0 .. S-1, t_0 = T is pure noise), all K samples
batched into one denoiser pass per step (B*K rows); the K masks sigmoid(l) are averaged in the
last step. The paper does not give S; S = 2 is the default because double-sample training
(below) trains exactly the two inputs a 2-step sampler feeds.

Double-sample training (the paper's): sample 1 starts from pure noise at t = T (not from the
noised ground truth, so the first step cannot lean on it); sample 2 starts from sample 1's
output re-noised to t_1 (as DDIM does at test time), so the second step learns to correct the
first one's errors. The loss takes sample 1, sample 2 or their mean, at random per batch.
`double_sample=False` is the single-sample baseline: x_t from the noised ground truth at a
random t.

Structure loss (F3Net's, which "weighted BCE + weighted IoU" names): per-cell weights
1 + 5 |avgpool3(m) - m| emphasise the mask's edges (a 3 x 3 window: F3Net's 31 px window is
about 2 cells of a 16-cell grid; on the 8-cell tiny grid 3 cells is the nearest odd size).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["MaskDenoiser", "MaskDiffusion", "structure_loss", "box_mask", "sampling_steps"]


def sampling_steps(timesteps: int, steps: int) -> list[int]:
    """The DDIM steps t_k = round(T (S - k) / S), k = 0 .. S-1 (t_0 = T)."""
    return [round(timesteps * (steps - k) / steps) for k in range(steps)]


def _time_embedding(t: torch.Tensor, dim: int, timesteps: int) -> torch.Tensor:
    """(B,) steps -> (B, dim) sinusoidal features of t / T."""
    half = dim // 2
    freq = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    arg = (t.float() / timesteps * 1000.0)[:, None] * freq[None]
    return torch.cat([arg.sin(), arg.cos()], -1)


class MaskDenoiser(nn.Module):
    """f_theta: x_t (R, 1, G, G), t (R,), encoded condition cc (R, W, G, G) (conv_c(c), see
    `encode`) -> mask logits (R, 1, G, G). G must be even."""

    def __init__(self, cond_dim: int, width: int, timesteps: int, eps: float = 1e-6):
        super().__init__()
        self.width, self.timesteps = width, timesteps
        self.norm = nn.LayerNorm(cond_dim, eps=eps)
        self.cond = nn.Conv2d(cond_dim, width, 1)
        self.conv_c = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.conv_x = nn.Conv2d(1, width, 3, padding=1)
        self.time = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, 3 * width))
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.mid = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.up = nn.Conv2d(3 * width, width, 3, padding=1)
        self.out = nn.Conv2d(width, 1, 1)

    def encode(self, f: torch.Tensor, grid: int) -> torch.Tensor:
        """F_s (B, G*G, C) -> conv_c(conv1x1(LN(F_s))) (B, W, G, G): once per frame."""
        B, N, C = f.shape
        img = self.norm(f).transpose(1, 2).reshape(B, C, grid, grid)
        return self.conv_c(self.cond(img))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cc: torch.Tensor) -> torch.Tensor:
        W = self.width
        temb = self.time(_time_embedding(t, W, self.timesteps).to(x.dtype))     # (R, 3W)
        h0 = F.gelu(self.conv_x(x) + cc + temb[:, :W, None, None])
        h1 = F.gelu(self.down(h0))
        h1 = F.gelu(self.mid(h1) + temb[:, W:, None, None])
        up = F.interpolate(h1, scale_factor=2, mode="nearest")
        h = F.gelu(self.up(torch.cat([up, h0], 1)))
        return self.out(h)


class MaskDiffusion(nn.Module):
    """The diffusion module (module docstring).

    Args:
        cond_dim: C. grid: G (even). width: the denoiser's base width W. timesteps: T.
        max_samples: size of the fixed noise bank (the largest K). scale: the signal scale.
    """

    def __init__(self, cond_dim: int, grid: int, width: int, timesteps: int, max_samples: int,
                 scale: float = 1.0, eps: float = 1e-6):
        super().__init__()
        from ..detrack.model import cosine_alphas_cumprod

        if grid % 2:
            raise ValueError(f"the mask grid must be even (the U-net halves it), got {grid}")
        self.grid, self.timesteps, self.scale = grid, timesteps, float(scale)
        self.denoiser = MaskDenoiser(cond_dim, width, timesteps, eps)
        self.register_buffer("noise", torch.zeros(max_samples, 1, grid, grid))
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(timesteps).float(),
                             persistent=False)
        # the sampler's abar(t) as Python floats: exact under .half() / bf16 (a half buffer
        # rounds abar near 1 to 1), and no device indexing inside a captured step
        with torch.device("cpu"):      # also when the module is built on the meta device
            self.abar = cosine_alphas_cumprod(timesteps).tolist()

    def _x0(self, logits: torch.Tensor) -> torch.Tensor:
        return self.scale * (2 * torch.sigmoid(logits) - 1)

    def sample(self, f: torch.Tensor, samples: int, steps: int, mean: bool = True) -> torch.Tensor:
        """Test-time mask: f (B, G*G, C) -> (B, G*G) in [0, 1], the mean of `samples` DDIM
        samplings of `steps` steps, batched (B * samples rows per denoiser pass); mean=False
        returns the samplings themselves, (B, samples, G*G)."""
        B, G = f.shape[0], self.grid
        if not 1 <= samples <= self.noise.shape[0]:
            raise ValueError(f"samples (K) must be in [1, {self.noise.shape[0]}], got {samples}")
        cc = self.denoiser.encode(f, G)                                          # once per frame
        cc = cc[:, None].expand(B, samples, *cc.shape[1:]).reshape(B * samples, *cc.shape[1:])
        x = self.noise[:samples].to(f.dtype).repeat(B, 1, 1, 1)                   # (B*K, 1, G, G)
        ts = sampling_steps(self.timesteps, steps)
        for k, t in enumerate(ts):
            tt = torch.full((B * samples,), t, device=f.device, dtype=torch.long)
            logits = self.denoiser(x, tt, cc)
            if k + 1 < len(ts):
                # DDIM, eta = 0: keep the noise x implies, move x0_hat to the next step
                a, a_next = self.abar[t], self.abar[ts[k + 1]]
                x0 = self._x0(logits)
                eps = (x - math.sqrt(a) * x0) / max(math.sqrt(1 - a), 1e-6)
                x = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next) * eps
        # the K-mean, in the last step
        # the mean in at least float32 (fp16 / bf16 masks are averaged in float32)
        acc = torch.promote_types(logits.dtype, torch.float32)
        masks = torch.sigmoid(logits.to(acc)).view(B, samples, G * G)
        return (masks.mean(1) if mean else masks).to(f.dtype)

    def train_sample(self, f: torch.Tensor, target: torch.Tensor, steps: int,
                     generator: torch.Generator | None = None, double: bool = True) -> torch.Tensor:
        """Training mask probabilities (B, G*G) with grad: double-sample (module docstring) or,
        double=False, one step from the noised target (B, G*G) at a random t in [1, T]."""
        B, G = f.shape[0], self.grid
        cc = self.denoiser.encode(f, G)
        dev, dt = f.device, f.dtype
        noise = torch.randn((B, 1, G, G), generator=generator).to(dev, dt)
        if not double:
            t = torch.randint(1, self.timesteps + 1, (B,), generator=generator).to(dev)
            a = self.alphas_cumprod[t].to(dt)[:, None, None, None]
            x0 = self.scale * (2 * target.view(B, 1, G, G) - 1)
            x = a.sqrt() * x0 + (1 - a).sqrt() * noise
            return torch.sigmoid(self.denoiser(x, t, cc)).view(B, G * G)
        ts = sampling_steps(self.timesteps, max(int(steps), 2))
        t0 = torch.full((B,), ts[0], device=dev, dtype=torch.long)
        l1 = self.denoiser(noise, t0, cc)                   # sample 1: pure noise
        a0, a1 = self.abar[ts[0]], self.abar[ts[1]]
        eps = (noise - math.sqrt(a0) * self._x0(l1)) / max(math.sqrt(1 - a0), 1e-6)
        x1 = math.sqrt(a1) * self._x0(l1) + math.sqrt(1 - a1) * eps
        l2 = self.denoiser(x1, torch.full_like(t0, ts[1]), cc)   # sample 2: from sample 1
        p1, p2 = torch.sigmoid(l1).view(B, G * G), torch.sigmoid(l2).view(B, G * G)
        pick = int(torch.randint(3, (1,), generator=generator))
        return (p1, p2, (p1 + p2) / 2)[pick]


def box_mask(gt_xyxy: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, 4) crop-normalized boxes -> (B, G*G) fraction of each grid cell the box covers."""
    edges = torch.arange(grid, device=gt_xyxy.device, dtype=gt_xyxy.dtype) / grid
    lo, hi = edges, edges + 1.0 / grid
    ox = (torch.minimum(hi[None], gt_xyxy[:, 2:3]) - torch.maximum(lo[None], gt_xyxy[:, 0:1])).clamp_min(0)
    oy = (torch.minimum(hi[None], gt_xyxy[:, 3:4]) - torch.maximum(lo[None], gt_xyxy[:, 1:2])).clamp_min(0)
    return (oy[:, :, None] * ox[:, None, :] * grid * grid).flatten(1)


def structure_loss(prob: torch.Tensor, target: torch.Tensor, grid: int) -> torch.Tensor:
    """F3Net's structure loss on (B, G*G) probabilities against (B, G*G) targets in [0, 1]:
    weighted BCE + weighted IoU, weights 1 + 5 |avgpool3(target) - target| (module docstring)."""
    B = prob.shape[0]
    tgt = target.view(B, 1, grid, grid)
    w = (1 + 5 * (F.avg_pool2d(tgt, 3, 1, 1, count_include_pad=False) - tgt).abs()).view(B, -1)
    p = prob.float().clamp(1e-6, 1 - 1e-6)
    bce = F.binary_cross_entropy(p, target.float(), reduction="none")
    wbce = (w * bce).sum(1) / w.sum(1)
    inter = (w * p * target).sum(1)
    union = (w * (p + target)).sum(1)
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()
