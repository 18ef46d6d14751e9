"""Stable Diffusion components for the diffusion trackers, from a local diffusers folder.

Both trackers need the same four things: the VAE encoder, the UNet, the noise schedule and the
"null" prompt context (the text encoder's output for the empty prompt, (1, L, D)) into which
learned prompt tokens are inserted. `load_components(path)` reads them from a folder in the
diffusers layout (vae/, unet/, scheduler/, text_encoder/ + tokenizer/), never from the network.

An optional `prompt_init.safetensors` at the root holds (1, 1, D), where the trackers' learnable
prompt tokens start (prompt_learning.initial_prompt; tiny-sd writes its encoder's "object").
The null context is read, in this order, from `null_context.safetensors` at the folder root
(written by `tiny_folder` and by `save_null_context`), or computed by the folder's text encoder
(needs the `transformers` package). `tiny_folder(path, seed)` writes a small random-weight model
in the same layout, so `DiffTracker.tiny()` / `DINTR.tiny()` go through exactly this loader.
`random_components("sd2.1")` builds the SD 2.1 architecture with random weights in memory (for
benchmarks at full size without downloading weights).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SDComponents", "load_components", "tiny_folder", "random_components", "preprocess",
           "add_noise", "diffusion_target", "save_null_context", "NULL_CONTEXT_FILE",
           "PROMPT_INIT_FILE"]

NULL_CONTEXT_FILE = "null_context.safetensors"
PROMPT_INIT_FILE = "prompt_init.safetensors"

# SD 2.x training schedule: scaled-linear betas, used when the folder has no scheduler/.
_SD_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                    beta_schedule="scaled_linear", prediction_type="epsilon")

_TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 16, 16),
                 layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=128)
# Same block structure as SD 2.1 (three cross-attention levels, linear projections), so layer
# names such as "up_blocks.3" mean the same thing: 128 px -> 16x16 latents -> levels 16, 8, 4, 2.
_TINY_UNET = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                  block_out_channels=(32, 32, 64, 64),
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                  attention_head_dim=(2, 2, 4, 4), cross_attention_dim=32, norm_num_groups=8,
                  use_linear_projection=True)
_TINY_CONTEXT = (77, 32)

_SD21_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                 up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                 layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=768)
_SD21_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                  block_out_channels=(320, 640, 1280, 1280),
                  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                  attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024,
                  use_linear_projection=True)
_SD21_CONTEXT = (77, 1024)


@dataclass
class SDComponents:
    """What the trackers use of a Stable Diffusion model.

    vae: AutoencoderKL; unet: UNet2DConditionModel (both frozen, eval mode);
    null_context: (1, L, D) empty-prompt text embedding; alphas_cumprod: (num_train_timesteps,)
    float32; prediction_type: "epsilon" or "v_prediction"; image_size: S, the square input size
    (UNet sample_size x VAE downsampling factor, 512 for SD 2.1 base); prompt_init: (1, 1, D)
    start of the learnable prompt tokens, or None (the null context's end token).
    """

    vae: torch.nn.Module
    unet: torch.nn.Module
    null_context: torch.Tensor
    alphas_cumprod: torch.Tensor
    prediction_type: str
    image_size: int
    prompt_init: torch.Tensor | None = None

    @property
    def latent_size(self) -> int:
        return self.image_size // self.vae_factor

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> scaled latents (B, 4, S/f, S/f), the posterior
        mean (deterministic, as trackers need)."""
        latents = self.vae.encode(images.to(self.vae.dtype)).latent_dist.mean
        return latents * self.vae.config.scaling_factor


def _alphas_cumprod(cfg: dict) -> tuple[torch.Tensor, str]:
    """(num_train_timesteps,) float32 cumulative alphas and the prediction type of a schedule."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    return sched.alphas_cumprod.to(torch.float32), sched.config.prediction_type


def _freeze(*modules):
    for m in modules:
        m.eval()
        m.requires_grad_(False)


def _check_folder(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a local folder path (str or PathLike), got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"path {path!r} is not a local folder (fasttrack never downloads weights)")
    for sub in ("unet", "vae"):
        if not os.path.isdir(os.path.join(path, sub)):
            raise ValueError(f"path {path!r} is not a diffusers Stable Diffusion folder: no {sub}/")
    return path


def _text_null_context(path: str) -> torch.Tensor:
    """Empty-prompt embedding (1, L, D) from the folder's CLIP text encoder and tokenizer."""
    if not os.path.isdir(os.path.join(path, "text_encoder")):
        raise ValueError(f"path {path!r} has neither {NULL_CONTEXT_FILE} nor text_encoder/: the "
                         "trackers need the empty-prompt embedding")
    try:
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as e:
        raise ImportError("reading text_encoder/ needs the transformers package "
                          "(pip install transformers), or put the empty-prompt embedding in "
                          f"{NULL_CONTEXT_FILE} with save_null_context") from e
    tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
    enc = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True)
    ids = tok("", padding="max_length", max_length=tok.model_max_length, return_tensors="pt")
    with torch.no_grad():
        return enc(ids.input_ids)[0].float()


def save_null_context(path, null_context: torch.Tensor) -> None:
    """Write the (1, L, D) empty-prompt embedding to `path`/null_context.safetensors."""
    from safetensors.torch import save_file

    save_file({"null_context": null_context.detach().float().cpu().contiguous()},
              os.path.join(os.fspath(path), NULL_CONTEXT_FILE))


def load_components(path, *, device="cpu", dtype=torch.float32, image_size: int | None = None) -> SDComponents:
    """Load the SD components of a local diffusers folder (no network access)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file

    path = _check_folder(path)
    # low_cpu_mem_usage=False: the plain loader, the same with or without `accelerate`.
    kw = dict(local_files_only=True, low_cpu_mem_usage=False)
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **kw)
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **kw)
    ctx_file = os.path.join(path, NULL_CONTEXT_FILE)
    null = load_file(ctx_file)["null_context"] if os.path.isfile(ctx_file) else _text_null_context(path)
    sched_cfg = dict(_SD_SCHEDULE)
    if os.path.isdir(os.path.join(path, "scheduler")):
        from diffusers import DDPMScheduler

        sched_cfg = dict(DDPMScheduler.load_config(path, subfolder="scheduler", local_files_only=True))
        sched_cfg = {k: v for k, v in sched_cfg.items()
                     if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                              "prediction_type", "trained_betas")}
    init_file = os.path.join(path, PROMPT_INIT_FILE)
    init = load_file(init_file)["prompt_init"] if os.path.isfile(init_file) else None
    return _assemble(vae, unet, null, sched_cfg, device, dtype, image_size, init)


def _assemble(vae, unet, null, sched_cfg, device, dtype, image_size, init=None) -> SDComponents:
    if null.ndim != 3 or null.shape[0] != 1 or null.shape[2] != unet.config.cross_attention_dim:
        raise ValueError(f"null context must be (1, L, {unet.config.cross_attention_dim}), got "
                         f"{tuple(null.shape)}")
    acp, pred = _alphas_cumprod(sched_cfg)
    _freeze(vae, unet)
    # nn.Module.to, not diffusers' override: it only adds a warning about fp32-pinned modules,
    # which these SD architectures do not have.
    torch.nn.Module.to(vae, device=device, dtype=dtype)
    torch.nn.Module.to(unet, device=device, dtype=dtype)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    size = int(image_size) if image_size is not None else int(unet.config.sample_size) * factor
    if size % factor:
        raise ValueError(f"image_size must be a multiple of the VAE factor {factor}, got {size}")
    if init is not None and tuple(init.shape) != (1, 1, null.shape[2]):
        raise ValueError(f"{PROMPT_INIT_FILE} must hold (1, 1, {null.shape[2]}), got {tuple(init.shape)}")
    init = None if init is None else init.to(device=device, dtype=dtype)
    return SDComponents(vae, unet, null.to(device=device, dtype=dtype), acp.to(device), pred, size, init)


def _random_modules(vae_cfg, unet_cfg, context_shape, seed, device=None):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    gen = torch.Generator().manual_seed(seed)
    with torch.device(device or "cpu"):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**vae_cfg)
        unet = UNet2DConditionModel(**unet_cfg)
    # CLIP's final layer norm leaves token embeddings with unit variance per feature.
    null = torch.randn((1, *context_shape), generator=gen)
    return vae, unet, null


def tiny_folder(path, seed: int = 0) -> str:
    """Write a small random-weight SD model (diffusers layout + null context) into `path`.
    128 px input, 16x16 latents, prompt dim 32. Returns the path."""
    from diffusers import DDPMScheduler

    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    vae, unet, null = _random_modules(_TINY_VAE, _TINY_UNET, _TINY_CONTEXT, seed)
    vae.save_pretrained(os.path.join(path, "vae"))
    unet.save_pretrained(os.path.join(path, "unet"))
    DDPMScheduler(**_SD_SCHEDULE).save_pretrained(os.path.join(path, "scheduler"))
    save_null_context(path, null)
    return path


def random_components(config: str = "sd2.1", *, seed: int = 0, device="cpu",
                      dtype=torch.float32) -> SDComponents:
    """In-memory random-weight components: "sd2.1" (865M-parameter UNet, 512 px, prompt dim
    1024) or "tiny". For benchmarks of the full-size shapes; nothing is written to disk."""
    table = {"sd2.1": (_SD21_VAE, _SD21_UNET, _SD21_CONTEXT, 512),
             "tiny": (_TINY_VAE, _TINY_UNET, _TINY_CONTEXT, 128)}
    if config not in table:
        raise ValueError(f"config must be one of {sorted(table)}, got {config!r}")
    vae_cfg, unet_cfg, ctx, size = table[config]
    vae, unet, null = _random_modules(vae_cfg, unet_cfg, ctx, seed, device)
    return _assemble(vae, unet, null, dict(_SD_SCHEDULE), device, dtype, size)


def preprocess(image, size: int, device, dtype) -> torch.Tensor:
    """RGB HWC uint8 image (numpy or tensor) -> (1, 3, size, size) in [-1, 1], resized
    bilinearly with antialiasing (the trackers feed SD a square frame, as both papers do)."""
    t = torch.from_numpy(np.ascontiguousarray(image)) if isinstance(image, np.ndarray) else image
    t = t.to(device=device, non_blocking=True).permute(2, 0, 1)[None].float()
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (t / 127.5 - 1.0).clamp_(-1.0, 1.0).to(dtype)


def add_noise(latents: torch.Tensor, noise: torch.Tensor, t: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """DDPM forward process q(z_t | z_0): sqrt(abar_t) z_0 + sqrt(1 - abar_t) noise.
    latents, noise: (B, C, h, w); t: integer timestep."""
    abar = alphas_cumprod[t].to(latents.dtype)
    return abar.sqrt() * latents + (1 - abar).sqrt() * noise


def diffusion_target(latents: torch.Tensor, noise: torch.Tensor, t: int, alphas_cumprod: torch.Tensor,
                     prediction_type: str) -> torch.Tensor:
    """What the UNet is trained to predict at step t: the noise (epsilon models) or
    v = sqrt(abar) noise - sqrt(1 - abar) z_0 (v-prediction models such as SD 2.1-768)."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        abar = alphas_cumprod[t].to(latents.dtype)
        return abar.sqrt() * noise - (1 - abar).sqrt() * latents
    raise ValueError(f"prediction_type {prediction_type!r} is not supported")
