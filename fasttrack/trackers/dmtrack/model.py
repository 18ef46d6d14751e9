"""DMTrack network (DESIGN.md 1.6): one-stream ViT over [template, search], gated
cross-attention of the search tokens over the text tokens, the diffusion mask module, the
feature filter and the centre head. No cropping or tracker state here (tracker.py).

    H_z, H_x = ViT([patch(z) + B_z, patch(x) + B_x])                 OSTrack one-stream (eq. 1)
    F_s      = H_x + has_text * tanh(g) * CrossAttn(LN(H_x); LN(T_q))  eq. 2, gated (g = 0 at init)
    m        = mean_k DDIM_k(noise_k | F_s)                            the mask (mask_diffusion.py)
    w        = keep * (1 + m) + (1 - keep) * filter_floor             feature filtering
    box      = CenterHead(F_s, query = mean(H_z), scale = w)            centre map, offset, size

The filter's weights multiply the head's tokens after its LayerNorm (the paper's "visual
features and mask combined linearly"): a scaling of F_s itself would be normalized away.

Choices where the paper is silent (each a config field):
- the gate (`cross_gate`): Flamingo's tanh(g) with a scalar g = 0 at init, so training starts
  from the vision tracker and lets the text in as far as it helps; "none" is eq. 2 as printed
  (no gate); its heads: `cross_heads`;
- the ViT blocks are DeTrack's VisualBlock (the same pre-norm joint-attention block);
- the mask is on the search-token grid (G x G, 16 x 16 at 256 px; `mask_width` is the U-net's
  base width, `mask_steps` the DDIM steps S, `samples` the K averaged at test, 1 in the paper's
  headline results and 5 in its ablation);
- feature filter (paper fig. 6 names "select the highest responses, re-weight them, suppress the
  rest"): the top `filter_keep` fraction of the grid by mask response is scaled by 1 + m, the
  rest by `filter_floor` (0.5: suppressed, not erased, so a mask that misses the target cannot
  hide it from the head);
- the head is DeTrack's centre head (detrack/center_head.py: conv tower, one softmax map, offset
  and size at the peak, an IoU score for `tracker.score`) queried with the mean template token,
  in place of OSTrack's Conv-BN-ReLU head (the same outputs: score map, offsets, sizes);
- `mask_module = "none"` drops the diffusion module and the filter (the paper's "w/o diffusion"
  ablation row): the head reads F_s.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..detrack.center_head import CenterHead, hann_grid
from ..detrack.model import VisualBlock, cosine_alphas_cumprod, grid_position_embedding, vit_init_
from .mask_diffusion import MaskDiffusion
from .text import BertTextEncoder, BuiltinTextEncoder

__all__ = ["DMTrackConfig", "DMTrackNet", "GatedCrossAttention", "TEXT_ENCODERS", "MASK_MODULES", "CROSS_GATES",
           "feature_filter"]

TEXT_ENCODERS = ("builtin", "bert")
# "tanh": F_s = H_x + tanh(g) CrossAttn, g = 0 at init (Flamingo's gate); "none": eq. 2 as
# printed, F_s = H_x + CrossAttn (the paper calls it gated but gives no gate)
CROSS_GATES = ("tanh", "none")
MASK_MODULES = ("diffusion", "none")


@dataclass(frozen=True)
class DMTrackConfig:
    """Sizes and choices of a DMTrack model (defaults: DMTrack-256, DESIGN.md 1.6)."""

    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    patch: int = 16
    template_size: int = 128
    search_size: int = 256
    template_factor: float = 2.0
    search_factor: float = 4.0
    text_encoder: str = "builtin"
    bert_path: str | None = None
    bert_dim: int = 768
    text_len: int = 36
    vocab_size: int = 8192
    text_depth: int = 2
    cross_heads: int = 12
    cross_gate: str = "tanh"
    mask_module: str = "diffusion"
    mask_width: int = 32
    timesteps: int = 1000
    mask_steps: int = 2
    samples: int = 1
    max_samples: int = 16
    mask_scale: float = 1.0
    filter_keep: float = 0.25
    filter_floor: float = 0.5
    center_window: float = 0.0
    clip_margin: float = 10.0
    ln_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self):
        for name in ("dim", "depth", "heads", "patch", "template_size", "search_size", "bert_dim",
                     "text_len", "vocab_size", "cross_heads", "mask_width", "timesteps",
                     "mask_steps", "samples", "max_samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"config.{name} must be a positive int, got {v!r}")
        if self.dim % self.heads or self.dim % self.cross_heads:
            raise ValueError(f"config.dim ({self.dim}) must be divisible by heads ({self.heads}) "
                             f"and cross_heads ({self.cross_heads})")
        if self.template_size % self.patch or self.search_size % self.patch:
            raise ValueError(f"config.template_size / search_size must be multiples of patch ({self.patch})")
        if self.mask_width % 2:
            raise ValueError(f"config.mask_width must be even (sine / cosine time features), got {self.mask_width}")
        if (self.search_size // self.patch) % 2:
            raise ValueError("config.search_size / patch must be even (the mask U-net halves the grid)")
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"config.text_encoder must be one of {TEXT_ENCODERS}, got {self.text_encoder!r}")
        if self.text_encoder == "bert" and not self.bert_path:
            raise ValueError("config.text_encoder 'bert' needs config.bert_path, a local BERT folder")
        if self.cross_gate not in CROSS_GATES:
            raise ValueError(f"config.cross_gate must be one of {CROSS_GATES}, got {self.cross_gate!r}")
        if self.mask_module not in MASK_MODULES:
            raise ValueError(f"config.mask_module must be one of {MASK_MODULES}, got {self.mask_module!r}")
        if self.samples > self.max_samples:
            raise ValueError(f"config.samples (K = {self.samples}) must be at most max_samples "
                             f"({self.max_samples}), the size of the fixed noise bank")
        if self.mask_steps > self.timesteps:
            raise ValueError(f"config.mask_steps ({self.mask_steps}) must be at most timesteps")
        if self.text_len < 3 or self.vocab_size < 4:
            raise ValueError("config.text_len must be >= 3 (CLS, a word, SEP) and vocab_size >= 4")
        if not 0 < self.filter_keep <= 1 or not 0 <= self.filter_floor <= 1:
            raise ValueError(f"config.filter_keep must be in (0, 1] and filter_floor in [0, 1], "
                             f"got {self.filter_keep}, {self.filter_floor}")
        for name in ("center_window", "mask_scale", "clip_margin", "template_factor", "search_factor"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0) or (name != "center_window" and v == 0):
                raise ValueError(f"config.{name} must be finite and {'>= 0' if name == 'center_window' else '> 0'}, got {v}")

    @property
    def grid(self) -> int:
        return self.search_size // self.patch

    @property
    def template_tokens(self) -> int:
        return (self.template_size // self.patch) ** 2

    @property
    def search_tokens(self) -> int:
        return self.grid ** 2

    def to_dict(self) -> dict:
        return asdict(self)


class GatedCrossAttention(nn.Module):
    """F_s = x + has_text * tanh(gate) * proj(MHA(LN(x) -> LN(text))) (eq. 2, gated; with
    gated=False the factor tanh(gate) is 1, eq. 2 as printed).

    forward(x (B, Nx, C), text (B, L, C), has_text (B,)) -> (B, Nx, C). The reference computes
    the attention with F.scaled_dot_product_attention; `fasttrack.patch` swaps in the fused
    twin (fused.py), which computes it with fasttrack.ops.attention."""

    def __init__(self, dim: int, heads: int, eps: float = 1e-6, gated: bool = True):
        super().__init__()
        self.dim, self.heads, self.gated = dim, heads, gated
        self.norm_x = nn.LayerNorm(dim, eps=eps)
        self.norm_t = nn.LayerNorm(dim, eps=eps)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.gate = nn.Parameter(torch.zeros(()))

    def qkv(self, x: torch.Tensor, text: torch.Tensor):
        """q (B, H, Nx, D), k, v (B, H, L, D)."""
        B, N, C = x.shape
        H = self.heads
        q = self.q(self.norm_x(x)).view(B, N, H, C // H).transpose(1, 2)
        k, v = self.kv(self.norm_t(text)).view(B, -1, 2, H, C // H).permute(2, 0, 3, 1, 4)
        return q, k, v

    def attend(self, q, k, v) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)

    def forward(self, x: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        a = self.attend(*self.qkv(x, text)).transpose(1, 2).reshape(B, N, C)
        g = has_text.to(x.dtype)[:, None, None]
        if self.gated:
            g = torch.tanh(self.gate).to(x.dtype) * g
        return x + g * self.proj(a)


def feature_filter(m: torch.Tensor, keep: float, floor: float) -> torch.Tensor:
    """The filter's per-token weights: m (B, N) mask in [0, 1] -> (B, N), 1 + m for the top
    ceil(keep N) tokens by m, `floor` for the others (ties: torch.topk's choice). The head
    multiplies its LayerNorm-ed features by them (CenterHead `scale`)."""
    N = m.shape[1]
    k = max(1, math.ceil(keep * N))
    idx = m.topk(k, dim=1).indices
    kept = torch.zeros_like(m).scatter_(1, idx, 1.0)
    return kept * (1 + m) + (1 - kept) * floor


class DMTrackNet(nn.Module):
    """The network. Entry points (B targets):

    embed_template(img (B, 3, Sz, Sz)) -> (B, Nz, C);  embed_search(img (B, 3, S, S)) -> (B, Nx, C);
    encode_text(texts: list of B str/None) -> (tokens (B, L, C), has_text (B,));
    features(z, x) -> (H_z (B, Nz, C), H_x (B, Nx, C), last-block input (B, Nz+Nx, C));
    predict(z, x, text, has_text, samples=None, steps=None) -> dict with xyxy (B, 4)
        crop-normalized, iou_score (B,), peak (B,), mask (B, Nx) (None without the module), the
        centre head's maps under "center".
    """

    def __init__(self, cfg: DMTrackConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.dim
        self.patch_embed = nn.Conv2d(3, C, cfg.patch, cfg.patch)
        self.pos_z = nn.Parameter(torch.zeros(1, cfg.template_tokens, C))
        self.pos_x = nn.Parameter(torch.zeros(1, cfg.search_tokens, C))
        self.blocks = nn.ModuleList(VisualBlock(C, cfg.heads, cfg.mlp_ratio, cfg.ln_eps)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(C, eps=cfg.ln_eps)
        if cfg.text_encoder == "builtin":
            self.text = BuiltinTextEncoder(C, cfg.text_len, cfg.vocab_size, cfg.text_depth,
                                           cfg.heads, cfg.mlp_ratio, cfg.ln_eps)
        else:
            self.text = BertTextEncoder(cfg.bert_path, C, cfg.text_len, cfg.bert_dim)
        self.cross = GatedCrossAttention(C, cfg.cross_heads, cfg.ln_eps, cfg.cross_gate == "tanh")
        self.mask = (MaskDiffusion(C, cfg.grid, cfg.mask_width, cfg.timesteps, cfg.max_samples,
                                   cfg.mask_scale, cfg.ln_eps)
                     if cfg.mask_module == "diffusion" else None)
        self.head = CenterHead(C, cfg.grid, cfg.ln_eps)

    def reset_parameters(self, seed: int = 0) -> "DMTrackNet":
        """Random init from `seed`, ViT style (DeTrack's): linear / conv / embedding weights
        normal(0, init_std) clipped at 2 std, biases 0, LayerNorms 1 / 0, 2-D sinusoidal
        position embeddings, text positions normal, the gate 0, the mask noise bank standard
        normal. Sets every tensor, so it also initializes a module built with `to_empty`."""
        gen = torch.Generator().manual_seed(seed)
        normal_ = vit_init_(self, gen, self.cfg.init_std, embeddings=True)
        with torch.no_grad():
            self.pos_x.copy_(grid_position_embedding(self.cfg.grid, self.cfg.dim))
            self.pos_z.copy_(grid_position_embedding(self.cfg.template_size // self.cfg.patch,
                                                     self.cfg.dim))
            if isinstance(self.text, BuiltinTextEncoder):
                normal_(self.text.pos)
            self.cross.gate.zero_()
            self.head.hann.copy_(hann_grid(self.head.grid))
            if self.mask is not None:
                self.mask.noise.copy_(torch.randn(self.mask.noise.shape, generator=gen))
                self.mask.alphas_cumprod.copy_(cosine_alphas_cumprod(self.cfg.timesteps))
        return self

    def embed_template(self, img: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(img).flatten(2).transpose(1, 2) + self.pos_z

    def embed_search(self, img: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(img).flatten(2).transpose(1, 2) + self.pos_x

    def encode_text(self, texts: list) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text(texts)

    def features(self, z: torch.Tensor, x: torch.Tensor):
        """One-stream ViT over [z, x]: (H_z, H_x, the last block's input tokens)."""
        t = torch.cat([z, x], 1)
        last_in = t
        for blk in self.blocks:
            last_in = t
            t, _, _ = blk(t, 0)
        t = self.norm(t)
        return t[:, :z.shape[1]], t[:, z.shape[1]:], last_in

    def template_attention(self, last_in: torch.Tensor, n_template: int) -> torch.Tensor:
        """(B, Nx): how much the template tokens attend to each search token in the last block,
        mean over heads and template tokens (OSTrack's candidate-elimination ranking)."""
        blk = self.blocks[-1]
        B, N, C = last_in.shape
        q, k, _ = blk.qkv(blk.norm1(last_in)).view(B, N, 3, blk.heads, C // blk.heads).permute(2, 0, 3, 1, 4)
        att = (q[:, :, :n_template] @ k.transpose(-1, -2) / math.sqrt(C // blk.heads)).softmax(-1)
        return att[..., n_template:].mean((1, 2))

    def head_from(self, fs: torch.Tensor, hz: torch.Tensor, mask: torch.Tensor | None) -> dict:
        """The filter (with a mask) and the centre head: dict of CenterHead plus "mask"."""
        w = None if mask is None else feature_filter(mask, self.cfg.filter_keep, self.cfg.filter_floor)
        out = self.head(fs, hz, self.cfg.center_window, scale=w)
        out["mask"] = mask
        return out

    def predict(self, z: torch.Tensor, x: torch.Tensor, text: torch.Tensor, has_text: torch.Tensor,
                samples: int | None = None, steps: int | None = None) -> dict:
        """Test-time forward (class docstring): z (B, Nz, C), x (B, Nx, C) embedded tokens,
        text (B, L, C), has_text (B,); K = samples and S = steps default to the config's."""
        hz, hx, _ = self.features(z, x)
        fs = self.cross(hx, text, has_text)
        mask = None
        if self.mask is not None:
            mask = self.mask.sample(fs, self.cfg.samples if samples is None else int(samples),
                                    self.cfg.mask_steps if steps is None else int(steps))
        return self.head_from(fs, hz, mask)
