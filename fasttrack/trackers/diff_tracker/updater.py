"""Diff-Tracker's online prompt updater (the paper's "Online Prompt Updater"; DESIGN 1.5).

    m_S = CrossAttn(Q = template, KV = MotionEnc_S(frame_k, frame_{k-1}))
    m_L = CrossAttn(Q = template, KV = MotionEnc_L(frame_k, ..., frame_{k-T}))
    l_k = FusionMLP([mean(m_S), mean(m_L)])
    p_k = beta p_{k-1} + (1 - beta) H_b(p_{k-1} + l_k),        beta = 0.7

Each motion encoder is a ResNet18 applied to every frame, then two Conv3D over (time, y, x):
the first (3x3x3, padding 1) mixes neighbouring frames, the second (kernel T_frames x 1 x 1)
collapses time, giving one token per feature cell. The queries come from the first frame's
template (the box crop) through a third ResNet18 and a 1x1 projection.

Choices the paper leaves open, made here: H_b is a 2-layer MLP applied as a residual,
H_b(x) = x + MLP(x), and the last layers of H_b and of the fusion MLP start at zero, so an
untrained updater is the identity (p_k = p_{k-1}) and training starts from the plain tracker.
Batch norms use their running statistics (frozen, as in tracking backbones), also in training.
The backbone features of each frame are computed once and kept (`features`), so a tracker runs
two ResNet18 passes per frame, not 2 + T + 1.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .resnet import ResNet18

__all__ = ["MotionEncoder", "PromptUpdater", "UpdaterConfig", "crop_boxes", "updater_config_for"]

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class UpdaterConfig(dict):
    """Hyperparameters of a PromptUpdater (a plain dict, saved as JSON)."""

    DEFAULTS = dict(prompt_dim=1024, num_tokens=1, width=64, dim=256, heads=8, history=5,
                    frame_size=128, template_size=64, beta=0.7, hidden=1024)

    def __init__(self, **kw):
        unknown = set(kw) - set(self.DEFAULTS)
        if unknown:
            raise ValueError(f"unknown updater settings {sorted(unknown)}")
        super().__init__({**self.DEFAULTS, **kw})
        if not 0.0 <= float(self["beta"]) <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self['beta']!r}")
        if int(self["history"]) < 1:
            raise ValueError(f"history must be >= 1, got {self['history']!r}")


# The updater of toy models (prompt dim <= 64: `tiny`, tiny-sd): 64 px frames, 32-d tokens.
TOY_UPDATER = dict(width=8, dim=32, heads=2, history=5, frame_size=64, template_size=32, hidden=64)


def updater_config_for(prompt_dim: int, num_tokens: int = 1) -> UpdaterConfig:
    """The updater a model of this prompt size gets by default: the paper's (DEFAULTS) for
    Stable Diffusion, the toy one for prompt dims up to 64 (a paper-size ResNet18 updater
    would outweigh a toy UNet many times)."""
    extra = TOY_UPDATER if int(prompt_dim) <= 64 else {}
    return UpdaterConfig(prompt_dim=int(prompt_dim), num_tokens=int(num_tokens), **extra)


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear crops of boxes, resized to size x size.

    images: (1, C, H, W) or (K, C, H, W); boxes: (K, 4) [x, y, w, h] in pixels.
    Returns (K, C, size, size). Samples outside the image read zeros.
    """
    K = boxes.shape[0]
    _, C, H, W = images.shape
    b = boxes.to(torch.float32)
    # affine_grid maps output [-1, 1] to input normalized coordinates (align_corners=False):
    # u_norm = (2 u / W) - 1 for a continuous pixel coordinate u.
    cx = (b[:, 0] + b[:, 2] / 2) * 2 / W - 1
    cy = (b[:, 1] + b[:, 3] / 2) * 2 / H - 1
    theta = torch.zeros(K, 2, 3, device=b.device, dtype=torch.float32)
    theta[:, 0, 0] = b[:, 2] / W
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = b[:, 3] / H
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [K, C, size, size], align_corners=False)
    src = images.float().expand(K, -1, -1, -1) if images.shape[0] == 1 else images.float()
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class MotionEncoder(nn.Module):
    """ResNet18 + two Conv3D. Per-frame features via `features`, tokens via `forward`.

    features: (F, 3, s, s) normalized frames -> (F, C, h, w) backbone features.
    forward: (B, T_frames, C, h, w) stacked features -> (B, h * w, dim) motion tokens.
    """

    def __init__(self, num_frames: int, width: int, dim: int):
        super().__init__()
        self.num_frames = num_frames
        self.backbone = ResNet18(width)
        c = self.backbone.out_channels
        self.temporal = nn.Conv3d(c, dim, kernel_size=3, padding=1)
        self.collapse = nn.Conv3d(dim, dim, kernel_size=(num_frames, 1, 1))

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.backbone(frames)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.shape[1] != self.num_frames:
            raise ValueError(f"expected {self.num_frames} frames of features, got {feats.shape[1]}")
        x = feats.transpose(1, 2)                       # (B, C, T, h, w)
        x = F.relu(self.temporal(x))
        x = self.collapse(x)[:, :, 0]                   # (B, dim, h, w)
        return x.flatten(2).transpose(1, 2)


class PromptUpdater(nn.Module):
    """The online prompt updater. See the module docstring for the equations.

    forward(prompt (K, P, D), template (K, Nq, dim), short (1 or K, 2, C, h, w),
            long (1 or K, T + 1, C, h, w)) -> updated prompt (K, P, D).
    """

    def __init__(self, config: UpdaterConfig | None = None, **kw):
        super().__init__()
        cfg = UpdaterConfig(**(dict(config or {}) | kw))
        self.config = cfg
        D, P, dim = cfg["prompt_dim"], cfg["num_tokens"], cfg["dim"]
        self.short = MotionEncoder(2, cfg["width"], dim)
        self.long = MotionEncoder(cfg["history"] + 1, cfg["width"], dim)
        self.appearance = ResNet18(cfg["width"])
        self.query_proj = nn.Conv2d(self.appearance.out_channels, dim, 1)
        self.attn_short = nn.MultiheadAttention(dim, cfg["heads"], batch_first=True)
        self.attn_long = nn.MultiheadAttention(dim, cfg["heads"], batch_first=True)
        self.fusion = nn.Sequential(nn.Linear(2 * dim, cfg["hidden"]), nn.GELU(),
                                    nn.Linear(cfg["hidden"], P * D))
        self.blend = nn.Sequential(nn.Linear(D, cfg["hidden"]), nn.GELU(), nn.Linear(cfg["hidden"], D))
        for last in (self.fusion[-1], self.blend[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.beta = float(cfg["beta"])
        # ImageNet statistics as (non-persistent) buffers: they follow .to(device) and need no
        # host-to-device copy per frame.
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def prepare(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, 3, size, size) float32, ImageNet-normalized."""
        x = images.float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return ((x + 1) / 2 - self.mean) / self.std

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def template_tokens(self, crops: torch.Tensor) -> torch.Tensor:
        """(K, 3, t, t) normalized template crops -> (K, Nq, dim) queries."""
        q = self.query_proj(self.appearance(crops))
        return q.flatten(2).transpose(1, 2)

    def motion(self, template: torch.Tensor, short: torch.Tensor, long: torch.Tensor) -> torch.Tensor:
        """Target-conditioned motion l_k: (K, P, D)."""
        K = template.shape[0]
        ks = self.short(short).expand(K, -1, -1)
        kl = self.long(long).expand(K, -1, -1)
        ms, _ = self.attn_short(template, ks, ks, need_weights=False)
        ml, _ = self.attn_long(template, kl, kl, need_weights=False)
        fused = self.fusion(torch.cat([ms.mean(1), ml.mean(1)], dim=-1))
        P, D = self.config["num_tokens"], self.config["prompt_dim"]
        return fused.view(K, P, D)

    def is_identity(self) -> bool:
        """Whether forward returns the prompt unchanged whatever its inputs: the last layers of
        the fusion MLP and of H_b are zero (an untrained updater), so l_k = 0 and MLP(x) = 0.
        Reads the weights on the host: call it outside a frame."""
        with torch.no_grad():
            return all(not last.weight.any() and not last.bias.any()
                       for last in (self.fusion[-1], self.blend[-1]))

    def forward(self, prompt: torch.Tensor, template: torch.Tensor, short: torch.Tensor,
                long: torch.Tensor) -> torch.Tensor:
        l_k = self.motion(template, short, long)
        x = prompt.float() + l_k
        # beta p + (1 - beta) H_b(x) with H_b(x) = x + MLP(x), written as p plus a correction:
        # p + (1 - beta) (l_k + MLP(x)). Equal in exact arithmetic; this form returns p bit for
        # bit when the correction is zero (an untrained updater) and keeps p's precision.
        delta = (1 - self.beta) * (l_k + self.blend(x))
        return prompt + delta.to(prompt.dtype)
