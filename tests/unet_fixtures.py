"""Tiny diffusers UNet2DConditionModel configurations shared by the patch, recorder and tracker
tests, the SD 2.1-shaped configuration of the memory test and the benchmark, and EagerRecorder:
the Prompt-to-Prompt-style reference recorder (the oracle of the recorder tests).

Every tiny config has three levels, so an odd latent such as 12 x 10 gives attention layers at
(12, 10), (6, 5) and (3, 3) (diffusers' stride-2 convolutions round up: ceil(h / 2)). Weights are
random (seeded): diffusers zero-initializes none of these layers, so every attention layer
shapes the output.

    unet = make_unet("sd15")                        # 2 heads of dim 8, conv projections
    sample, t, ctx, extra = unet_inputs(unet, batch=2, latent=(12, 10))
    out = unet(sample, t, encoder_hidden_states=ctx, **extra).sample
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fasttrack.bench import recorder as bench_recorder

_COMMON = dict(
    in_channels=4,
    out_channels=4,
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(16, 32, 32),
)

CONFIGS = {
    # SD 1.x-like: conv proj_in/proj_out, the same head count at every level.
    "sd15": dict(_COMMON, attention_head_dim=2, cross_attention_dim=24, sample_size=12),
    # SD 2.x-like: linear projections, head count growing with depth (SD 2.1: 5/10/20/20).
    "sd21": dict(_COMMON, attention_head_dim=(2, 4, 4), cross_attention_dim=20,
                 use_linear_projection=True, sample_size=12),
    # SDXL-like: text_time added conditions, two transformer layers in the deeper block, no
    # attention at the top level (as in SDXL's first DownBlock2D).
    "sdxl": dict(
        _COMMON,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 2, 4),
        transformer_layers_per_block=(1, 1, 2),
        cross_attention_dim=32,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=16 + 6 * 4,
        sample_size=12,
    ),
}

# Stable Diffusion 2.1 UNet shape (865 M parameters), for memory tests and benchmarks.
SD21_CONFIG = bench_recorder.SD21_CONFIG

# SDXL's text_embeds width in the tiny "sdxl" config (projection input minus 6 time ids).
SDXL_TEXT_EMBED_DIM = 16


def make_unet(name: str = "sd15", *, seed: int = 0, dtype=torch.float32, **overrides):
    """A UNet2DConditionModel from CONFIGS[name] (or SD21_CONFIG for "sd21_full") in eval mode."""
    from diffusers import UNet2DConditionModel

    cfg = dict(SD21_CONFIG if name == "sd21_full" else CONFIGS[name])
    cfg.update(overrides)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfg).eval()
    if dtype != torch.float32:
        # Module.to, not ModelMixin.to: diffusers warns about keep-in-fp32 modules otherwise.
        torch.nn.Module.to(unet, dtype)
    return unet


def unet_inputs(unet, *, batch: int = 2, latent=(12, 10), tokens: int = 7, seed: int = 0,
                dtype=None, requires_grad: bool = False):
    """Random (sample, timestep, encoder_hidden_states, extra_kwargs) for `unet`.

    sample (B, 4, h, w); timestep a (B,) float tensor; encoder_hidden_states (B, tokens, Dc);
    extra holds added_cond_kwargs for text_time configs. With batch=2 this is a classifier-free
    guidance batch: entry 0 plays the unconditional half, entry 1 the conditional one.
    """
    cfg = unet.config
    dtype = dtype or next(unet.parameters()).dtype
    g = torch.Generator().manual_seed(seed)
    h, w = latent
    sample = torch.randn(batch, cfg.in_channels, h, w, generator=g).to(dtype)
    timestep = torch.tensor([500.0 + 37 * i for i in range(batch)]).to(dtype)
    ctx = torch.randn(batch, tokens, cfg.cross_attention_dim, generator=g).to(dtype)
    if requires_grad:
        ctx.requires_grad_(True)
    extra = {}
    if cfg.addition_embed_type == "text_time":
        extra["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, SDXL_TEXT_EMBED_DIM, generator=g).to(dtype),
            "time_ids": torch.tensor([[64.0, 48.0, 0.0, 0.0, 64.0, 48.0]] * batch).to(dtype),
        }
    return sample, timestep, ctx, extra


def attention_layer_names(unet, kind: str) -> list[str]:
    """Names of the diffusers Attention modules of one kind ("self" or "cross")."""
    from diffusers.models.attention_processor import Attention

    want_cross = kind == "cross"
    return [n for n, m in unet.named_modules()
            if isinstance(m, Attention) and bool(m.is_cross_attention) == want_cross]


def level_sizes(latent, levels: int = 4) -> list[tuple[int, int]]:
    """Spatial sizes of the UNet levels for a latent (h, w): ceil-halving, as diffusers' stride-2
    convolutions (kernel 3, padding 1) produce."""
    h, w = latent
    out = []
    for _ in range(levels):
        out.append((h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return out


class _SpyProcessor:
    """diffusers' unfused AttnProcessor, handing every probability map to the eager recorder."""

    def __init__(self, rec, name):
        from diffusers.models.attention_processor import AttnProcessor

        self.rec, self.name, self.inner = rec, name, AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        original = attn.get_attention_scores

        def spy(query, key, mask=None):
            probs = original(query, key, mask)
            self.rec.store(self.name, probs, attn.heads, encoder_hidden_states is not None)
            return probs

        attn.get_attention_scores = spy
        try:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        finally:
            del attn.get_attention_scores


class EagerRecorder:
    """Materializes every map: (B, N, T) cross and (B, N, N) self maps per layer and call."""

    def __init__(self, model, *, latent, grid, cross_names, self_names, tokens=None, batch=None,
                 renormalize=False):
        self.model, self.grid = model, grid
        self.sizes = level_sizes(latent, 6)
        self.cross_names, self.self_names = set(cross_names), set(self_names)
        self.tokens, self.batch, self.renormalize = tokens, batch, renormalize
        self.cross_maps, self.self_maps = [], []

    def __enter__(self):
        from diffusers.models.attention_processor import Attention

        self.saved = {}
        for name, mod in self.model.named_modules():
            if isinstance(mod, Attention):
                self.saved[name] = mod.processor
                mod.set_processor(_SpyProcessor(self, name))
        return self

    def __exit__(self, *exc):
        for name, mod in self.model.named_modules():
            if name in self.saved:
                mod.set_processor(self.saved[name])

    def _hw(self, n):
        return next(hw for hw in self.sizes if hw[0] * hw[1] == n)

    def store(self, name, probs, heads, is_cross):
        bh, n, nk = probs.shape
        p = probs.reshape(bh // heads, heads, n, nk).mean(1)
        if self.batch is not None:
            p = p[self.batch]
        h, w = self._hw(n)
        b = p.shape[0]
        if is_cross and name in self.cross_names:
            if self.tokens is not None:
                p = p[:, :, self.tokens]
            img = p.permute(0, 2, 1).reshape(b, -1, h, w)
            self.cross_maps.append(F.interpolate(img, size=self.grid, mode="bilinear", align_corners=False))
        elif not is_cross and name in self.self_names:
            m = self.grid[0] * self.grid[1]
            keys = F.interpolate(p.reshape(b * n, 1, h, w), size=self.grid, mode="bilinear",
                                 align_corners=False).reshape(b, h, w, m)
            full = F.interpolate(keys.permute(0, 3, 1, 2), size=self.grid, mode="nearest")
            s_up = full.reshape(b, m, m).transpose(1, 2)  # rows: output queries, cols: output keys
            if self.renormalize:
                s_up = s_up / s_up.sum(-1, keepdim=True)
            self.self_maps.append(s_up)

    def cross(self):
        return torch.stack(self.cross_maps).mean(0)

    def received(self):
        """(B, Rh, Rw): the attention each output pixel receives, column sums of S_bar."""
        s_bar = torch.stack(self.self_maps).mean(0)
        return s_bar.sum(1).reshape(s_bar.shape[0], *self.grid)

    def self_cross(self):
        c = self.cross()
        b, t = c.shape[:2]
        s_bar = torch.stack(self.self_maps).mean(0)
        out = torch.einsum("bij,bit->bjt", s_bar, c.reshape(b, t, -1).transpose(1, 2))
        return out.transpose(1, 2).reshape(c.shape)
