"""DeTrack network: a denoising ViT over [templates, search] plus a box branch per block, the
box-refining transformer and the bin mapping (DESIGN.md 1.4). No cropping or tracker state here
(crop.py, memory.py, tracker.py).

Tokens: each of the K = 3 templates (template_size px) and the search crop (search_size px) is
cut into patch x patch patches by a strided convolution and gets a learned position embedding
(templates share theirs, plus a per-slot embedding). The visual tokens [z_1, .., z_K, x] go
through pre-norm ViT blocks with joint attention (OSTrack one-stream); in every block the 4 box
tokens read that block's search keys/values through the box branch (box_branch.py) and lose one
step of noise, so the box is denoised layer by layer in a single forward.

Noise: cosine schedule abar(t), t = 0 .. timesteps (abar(0) = 1, abar(timesteps) = 0). Training
noises the ground-truth box embedding b0 to step t; block l is trained to land on the same
noise sample at step t (L - l) / L (train.py). Inference starts from the embedding of the
previous box (the box the search crop is centred on) noised to step infer_t with a fixed noise
sample (`box_noise`, part of the checkpoint), so the step is deterministic; infer_t = timesteps
(the default) is pure noise, as the paper's single-pass sampler. fasttrack's trainer noises
with this same sample by default (train.py: fresh noise learns several times slower).

Token identity (DESIGN.md 1.7): at abar = 0 the 4 box tokens carry no trace of which coordinate
they are, and every layer after them (box branch, refiner, mapping) treats the 4 tokens alike:
permuting the initial noise permutes the decoded coordinates, so without help the four collapse
to the same value (boxes of zero area). A learned per-coordinate query embedding `box_query`
(4, C) is added after noising, to the box branch's input and again to the refiner's input, so
token i always knows it is x1, y1, x2 or y2 whatever the noise.

Multi-pass (`denoise_steps` S > 1, the paper's 24 / 48-step variant): pass k runs the whole ViT
from step t_k = infer_t (S - k) / S; its output is the estimate b0_hat, which DDIM (eta = 0)
re-noises to t_{k+1} with the noise implied by the pass's input, eps_hat = (b_in - sqrt(abar)
b0_hat) / sqrt(1 - abar). S = 1 is the single pass. Each pass costs a full forward.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .box_branch import BoxBranch, autocast_on
from .center_head import CenterHead, hann_grid
from .refine import BinMapping, BoxEmbedding, BoxRefiner, block_causal_mask, sinusoidal_bins

__all__ = ["BOX_HEADS", "DeTrackConfig", "DeTrackNet", "VisualBlock", "DenoisingBlock", "cosine_alphas_cumprod",
           "grid_position_embedding", "vit_init_"]


# "bins": the paper's decoder, each coordinate a soft-argmax over bins (refine.BinMapping);
# "center": fasttrack's joint whole-box head on the search tokens, queried by the refined box
# tokens (center_head.py), whose single peak cannot split a box across two look-alikes.
BOX_HEADS = ("bins", "center")


@dataclass(frozen=True)
class DeTrackConfig:
    """Sizes of a DeTrack model (defaults: DeTrack256, DESIGN.md 1.4). box_head picks the box
    decoder (BOX_HEADS); center_window is the Hann-window exponent of the "center" head's peak
    search (0: none)."""

    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    patch: int = 16
    template_size: int = 128
    search_size: int = 256
    n_bins: int = 800
    n_templates: int = 3
    box_mlp_ratio: float = 4.0
    noise_hidden: int | None = None
    refine_depth: int = 6
    refine_heads: int = 12
    traj_len: int = 7
    template_factor: float = 2.0
    search_factor: float = 4.0
    timesteps: int = 1000
    infer_t: int = 1000
    denoise_steps: int = 1
    iou_gate: float = 0.75
    softmax_gate: float = 0.9
    clip_margin: float = 10.0
    box_head: str = "bins"
    center_window: float = 0.0
    ln_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self):
        ints = ("dim", "depth", "heads", "patch", "template_size", "search_size", "n_bins",
                "n_templates", "refine_depth", "refine_heads", "traj_len", "timesteps",
                "denoise_steps")
        for name in ints:
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise ValueError(f"config.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.dim % self.heads or self.dim % self.refine_heads:
            raise ValueError(f"config.dim ({self.dim}) must be divisible by heads ({self.heads}) "
                             f"and refine_heads ({self.refine_heads})")
        if self.template_size % self.patch or self.search_size % self.patch:
            raise ValueError(f"config.template_size / search_size must be multiples of patch "
                             f"({self.patch})")
        if self.denoise_steps > max(self.infer_t, 1):
            raise ValueError(f"config.denoise_steps ({self.denoise_steps}) must be at most "
                             f"infer_t ({self.infer_t}): each pass needs its own step")
        if not 0 <= self.infer_t <= self.timesteps:
            raise ValueError(f"config.infer_t must be in [0, timesteps], got {self.infer_t}")
        if self.box_head not in BOX_HEADS:
            raise ValueError(f"config.box_head must be one of {BOX_HEADS}, got {self.box_head!r}")
        if not (math.isfinite(self.center_window) and self.center_window >= 0):
            # inf would flatten the windowed map to 0 everywhere and argmax would pick cell 0
            raise ValueError(f"config.center_window must be finite and >= 0, got {self.center_window}")
        if self.n_bins < 2 or self.template_factor <= 0 or self.search_factor <= 0:
            raise ValueError("config.n_bins must be >= 2 and the crop factors positive")

    @property
    def template_tokens(self) -> int:
        return (self.template_size // self.patch) ** 2

    @property
    def search_tokens(self) -> int:
        return (self.search_size // self.patch) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


def grid_position_embedding(grid: int, dim: int, scale: float = 0.5) -> torch.Tensor:
    """(1, grid * grid, dim) row-major 2-D sinusoidal embedding: the first dim/2 channels hold
    sinusoidal_bins of the token's column centre (c + 0.5) / grid, the rest those of its row."""
    half = dim // 2
    centres = (torch.arange(grid, dtype=torch.float64) + 0.5) / grid
    n = 1024
    table = sinusoidal_bins(n, half).double()
    ex = table[torch.round(centres * (n - 1)).long()]                     # (grid, half)
    ey = sinusoidal_bins(n, dim - half).double()[torch.round(centres * (n - 1)).long()]
    emb = torch.cat([ex[None, :, :].expand(grid, grid, half),
                     ey[:, None, :].expand(grid, grid, dim - half)], -1)
    return (scale * emb).reshape(1, grid * grid, dim).float()


def vit_init_(root: nn.Module, gen: torch.Generator, std: float, embeddings: bool = False):
    """ViT-style init of every module under `root`, in module order: Linear / Conv2d weights
    (and nn.Embedding weights with embeddings=True) normal(0, std) clipped at 2 std, biases 0,
    LayerNorms 1 / 0. Returns the clipped-normal initializer (same generator) for the caller's
    other parameters."""
    def normal_(p: torch.Tensor) -> None:
        p.copy_((torch.randn(p.shape, generator=gen).clamp_(-2, 2) * std).to(p.dtype))

    with torch.no_grad():
        for m in root.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                normal_(m.weight)
                if m.bias is not None:
                    m.bias.zero_()
            elif embeddings and isinstance(m, nn.Embedding):
                normal_(m.weight)
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
    return normal_


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """(timesteps + 1,) float64 abar(t) of the cosine schedule (Nichol & Dhariwal 2021),
    abar(0) = 1, clamped to exactly 0 at t = timesteps (cos(pi/2) rounds to 6e-17)."""
    t = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    abar = (f / f[0]).clamp(0.0, 1.0)
    abar[-1] = 0.0
    return abar


class VisualBlock(nn.Module):
    """Pre-norm ViT block with joint attention over all visual tokens.

    forward(t (B, N, C), n_search) -> (t_out (B, N, C), k_x, v_x (B, H, n_search, D)): the keys
    and values of the last n_search tokens (the search region), strided views of the qkv
    projection, handed to the box branch."""

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

    def forward(self, t: torch.Tensor, n_search: int):
        B, N, C = t.shape
        q, k, v = self.qkv(self.norm1(t)).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v)
        t = t + self.proj(a.transpose(1, 2).reshape(B, N, C))
        t = t + self.fc2(F.gelu(self.fc1(self.norm2(t))))
        return t, k[:, :, N - n_search:], v[:, :, N - n_search:]


class DenoisingBlock(nn.Module):
    """One denoising block: visual block, then the box branch on its search keys/values.
    forward(t (B, N, C), b (B, 4, C), n_search) -> (t_out, b_next)."""

    def __init__(self, cfg: DeTrackConfig):
        super().__init__()
        self.vis = VisualBlock(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.ln_eps)
        self.box = BoxBranch(cfg.dim, cfg.heads, cfg.box_mlp_ratio, cfg.noise_hidden, cfg.ln_eps)

    def forward(self, t: torch.Tensor, b: torch.Tensor, n_search: int):
        t, k_x, v_x = self.vis(t, n_search)
        return t, self.box(b, k_x, v_x)


class DeTrackNet(nn.Module):
    """The network. Main entry points (B targets):

    embed_template(img (B, 3, Sz, Sz)) -> (B, Nz, C) template tokens (memory.py stores them);
    embed_search(img (B, 3, S, S)) -> (B, Nx, C);
    denoise(z (B, K, Nz, C), x (B, Nx, C), b (B, 4, C)) -> (x_out, b_out, [b after each block]);
    predict(z, x, prior (B, 4), traj (B, T, 4)) -> BinMapping dict (+ "box_tokens"), all boxes
    xyxy normalized to the search crop.
    """

    def __init__(self, cfg: DeTrackConfig):
        super().__init__()
        self.cfg = cfg
        C, std = cfg.dim, cfg.init_std
        self.patch_embed = nn.Conv2d(3, C, cfg.patch, cfg.patch)
        self.pos_z = nn.Parameter(torch.zeros(1, cfg.template_tokens, C))
        self.pos_x = nn.Parameter(torch.zeros(1, cfg.search_tokens, C))
        self.slot_embed = nn.Parameter(torch.zeros(cfg.n_templates, 1, C))
        self.blocks = nn.ModuleList(DenoisingBlock(cfg) for _ in range(cfg.depth))
        self.box_embed = BoxEmbedding(cfg.n_bins, C, std)
        self.box_query = nn.Parameter(torch.zeros(4, C))
        self.refiner = BoxRefiner(C, cfg.refine_depth, cfg.refine_heads, cfg.traj_len,
                                  cfg.mlp_ratio, cfg.ln_eps, std)
        self.mapping = BinMapping(C)
        self.center = (CenterHead(C, cfg.search_size // cfg.patch, cfg.ln_eps)
                       if cfg.box_head == "center" else None)
        self.register_buffer("box_noise", torch.zeros(4, C))
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(cfg.timesteps).float(),
                             persistent=False)

    def reset_parameters(self, seed: int = 0) -> "DeTrackNet":
        """Random init from a fixed seed, ViT style: linear / conv weights, position, slot,
        coordinate and time embeddings normal(0, init_std) clipped at 2 std, biases 0,
        LayerNorms 1 / 0; bin embeddings sinusoidal and the mapping scale at its init value;
        the inference noise sample `box_noise` standard normal; the noise schedule and the
        refiner mask recomputed. Every tensor of the module is set, so it also initializes a
        module materialized with `to_empty`."""
        gen = torch.Generator().manual_seed(seed)
        normal_ = vit_init_(self, gen, self.cfg.init_std)
        with torch.no_grad():
            for p in (self.slot_embed, self.box_embed.coord, self.refiner.time):
                normal_(p)
            # position embeddings: 2-D sinusoids in the bin embeddings' frequency family (x in
            # the first half of the channels, y in the second), so a box token that averages
            # the values of the tokens it attends to reads coordinates in the space the bin
            # mapping decodes; training from scratch localizes much sooner than from noise
            self.pos_x.copy_(grid_position_embedding(self.cfg.search_size // self.cfg.patch,
                                                     self.cfg.dim))
            self.pos_z.copy_(grid_position_embedding(self.cfg.template_size // self.cfg.patch,
                                                     self.cfg.dim))
            # unit scale, like the noise it is added to: the four tokens differ from step one
            self.box_query.copy_(torch.randn(self.box_query.shape, generator=gen).to(self.box_query.dtype))
            self.box_embed.word.weight.copy_(sinusoidal_bins(self.cfg.n_bins, self.cfg.dim))
            self.mapping.logit_scale.fill_(BinMapping.INIT_SCALE)
            self.box_noise.copy_(torch.randn(self.box_noise.shape, generator=gen).to(self.box_noise.dtype))
            # derived buffers (garbage after nn.Module.to_empty)
            self.alphas_cumprod.copy_(cosine_alphas_cumprod(self.cfg.timesteps))
            self.refiner.mask.copy_(block_causal_mask(self.cfg.traj_len + 1, 4))
            if self.center is not None:
                self.center.hann.copy_(hann_grid(self.center.grid))
        return self

    def embed_template(self, img: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(img).flatten(2).transpose(1, 2) + self.pos_z

    def embed_search(self, img: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(img).flatten(2).transpose(1, 2) + self.pos_x

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod[t]

    def initial_box_tokens(self, prior_xyxy: torch.Tensor) -> torch.Tensor:
        """(B, 4) prior box -> (B, 4, C) tokens at step infer_t with the fixed noise sample."""
        a = self.alphas_cumprod[self.cfg.infer_t].to(prior_xyxy.dtype)
        b0 = self.box_embed(prior_xyxy)
        return a.sqrt() * b0 + (1 - a).sqrt() * self.box_noise.to(b0.dtype)

    def denoise(self, z: torch.Tensor, x: torch.Tensor, b: torch.Tensor):
        """One pass of the denoising ViT: z (B, K, Nz, C), x (B, Nx, C), b (B, 4, C) noised box
        tokens (without the query embedding, which is added here) -> (x_out (B, Nx, C),
        b_out (B, 4, C), [b after each block])."""
        B, K, Nz, C = z.shape
        b = b + self.box_query.to(b.dtype)
        z = z + self.slot_embed[:K]
        t = torch.cat([z.reshape(B, K * Nz, C), x], 1)
        n_search = x.shape[1]
        layers = []
        for blk in self.blocks:
            t, b = blk(t, b, n_search)
            layers.append(b)
        return t[:, -n_search:], b, layers

    def head(self, b: torch.Tensor, traj_xyxy: torch.Tensor, x_out: torch.Tensor | None = None) -> dict:
        """Refine the denoised box tokens b (B, 4, C) with the trajectory (B, T, 4) and decode
        them: BinMapping's dict (logits, xyxy, softmax_score, iou_score). With box_head
        "center" (x_out (B, Nx, C), the last block's search tokens, required) xyxy and the two
        scores come from the centre head (softmax_score: its peak probability); the bin
        decoder's box stays in "bins_xyxy" and the head's maps under "center"."""
        traj_tokens = self.box_embed(traj_xyxy)
        refined = self.refiner(b + self.box_query.to(b.dtype), traj_tokens)
        out = self.mapping(refined, self.box_embed.word.weight)
        if self.center is not None:
            if x_out is None:
                raise ValueError("box_head 'center' needs x_out, the search tokens of the last block")
            c = self.center(x_out, refined, self.cfg.center_window)
            out.update(bins_xyxy=out["xyxy"], xyxy=c["xyxy"], softmax_score=c["peak"],
                       iou_score=c["iou_score"], center=c)
        return out

    def pass_steps(self, denoise_steps: int | None = None) -> list[int]:
        """The start step of each denoising pass: infer_t (S - k) / S, k = 0 .. S-1 (rounded)."""
        S = self.cfg.denoise_steps if denoise_steps is None else int(denoise_steps)
        if S < 1 or S > max(self.cfg.infer_t, 1):
            raise ValueError(f"denoise_steps must be in [1, infer_t = {self.cfg.infer_t}], got {S}")
        return [round(self.cfg.infer_t * (S - k) / S) for k in range(S)]

    def predict(self, z: torch.Tensor, x: torch.Tensor, prior_xyxy: torch.Tensor,
                traj_xyxy: torch.Tensor, denoise_steps: int | None = None) -> dict:
        steps = self.pass_steps(denoise_steps)
        b_in = self.initial_box_tokens(prior_xyxy).to(x.dtype)
        x_out, b, _ = self.denoise(z, x, b_in)
        for t_prev, t_next in zip(steps[:-1], steps[1:]):
            # DDIM, eta = 0: keep the noise the last input implies, move b0_hat to step t_next
            a_prev, a_next = self.alphas_cumprod[t_prev], self.alphas_cumprod[t_next]
            eps = (b_in - a_prev.sqrt().to(b.dtype) * b) / (1 - a_prev).sqrt().clamp_min(1e-6).to(b.dtype)
            b_in = a_next.sqrt().to(b.dtype) * b + (1 - a_next).sqrt().to(b.dtype) * eps
            x_out, b, _ = self.denoise(z, x, b_in)
        if autocast_on(b):
            # Under bf16 / fp16 autocast the heads still run in float32: they turn tokens into
            # pixel coordinates, where bf16's 8-bit mantissa is a whole pixel at 256 px (the
            # held-out check in the README measured the loss).
            with torch.autocast(b.device.type, enabled=False):
                out = self.head(b.float(), traj_xyxy.float(), None if x_out is None else x_out.float())
        else:
            out = self.head(b, traj_xyxy, x_out)
        out["box_tokens"] = b
        return out
