"""Bench section "recorder": one UNet step with attention-map recording (unit "UNet step").

The step: a classifier-free-guidance batch (B = 2, T = 77 tokens) through a diffusers UNet with
random weights, recording every cross-attention layer and every self-attention layer at the
top latent resolution, then the harmonized map at that resolution (DESIGN 1.1-1.2). Cases:

  unrecorded  the patched UNet without a recorder: the floor (role "other");
  eager       Prompt-to-Prompt style (fasttrack.recorder.EagerRecorder): diffusers' unfused
              AttnProcessor math, every (B, H, N, Nk) map materialized, explicit resizing,
              dense S_bar^T C_bar. On CUDA at 64 x 64 it holds
              2 x 5 x 4096^2 fp16 per top self layer (335 MB each) and may run out of memory:
              that is a result (ms = NaN, an "out of memory" note); the reference;
  fasttrack   fasttrack.AttentionRecorder, forward + harmonized(); its row's rel_err is the
              relative Frobenius difference of its harmonized map from the eager one's.

Models: CUDA: the SD 2.1 UNet shape (SD21_CONFIG, 865 M parameters, fp16) at 64 x 64 latents.
CPU: SD 2.1's two top levels (SD21_TOP_CONFIG: 320/640 channels, 5/10 heads of 64, cross dim
1024, linear projections), float32, at 24 x 24 latents (quick, the default run: seconds on a
small CPU) or 48 x 48 (--full: about 100 s on 2 cores).

Memory: the harness's peak allocated MB (fasttrack.bench.harness).
"""
from __future__ import annotations

import functools

import torch

from ..recorder import AttentionRecorder, EagerRecorder
from .harness import Case

SD21_CONFIG = dict(
    in_channels=4, out_channels=4, layers_per_block=2, sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
)
SD21_TOP_CONFIG = dict(
    in_channels=4, out_channels=4, layers_per_block=1, sample_size=32,
    block_out_channels=(320, 640),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10), cross_attention_dim=1024, use_linear_projection=True,
)


def _model(device, cfg, latent, dtype):
    """The patched UNet with random weights and one CFG step's inputs (sample, t, context)."""
    from diffusers import UNet2DConditionModel

    from ..patch import patch

    cuda = device.type == "cuda"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg).eval()
    torch.nn.Module.to(unet, device=device, dtype=dtype)
    # On CPU "auto" means the torch backend, except under TRITON_INTERPRET=1 (the test and
    # benchmark suites set it), where it would pick the Triton interpreter: not a speed.
    patch(unet, backend="auto" if cuda else "torch")
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, latent, latent, generator=g).to(device, dtype)
    ctx = torch.randn(2, 77, cfg["cross_attention_dim"], generator=g).to(device, dtype)
    t = torch.tensor([500.0, 500.0], device=device, dtype=dtype)
    return unet, (sample, t, ctx)


def cases(device, quick: bool = False) -> list[Case]:
    """unrecorded, eager and fasttrack steps (module docstring); the UNet is built once, when
    the first case runs. ImportError without diffusers (the section is then skipped)."""
    import diffusers  # noqa: F401  (checked here: a missing package skips the whole section)

    device = torch.device(device)
    cuda = device.type == "cuda"
    cfg, latent = (SD21_CONFIG, 64) if cuda else (SD21_TOP_CONFIG, 24 if quick else 48)
    dtype = torch.float16 if cuda else torch.float32
    shape = f"{'SD2.1' if cuda else 'SD2.1-top'} {latent}x{latent}"
    model = functools.cache(functools.partial(_model, device, cfg, latent, dtype))
    maps = {}  # the eager case's harmonized map, for the fasttrack case's rel_err

    def step(recorder):
        def setup():
            unet, (sample, t, ctx) = model()

            @torch.no_grad()
            def run():
                if recorder is None:
                    return unet(sample, t, encoder_hidden_states=ctx).sample
                with recorder(unet, resolution=(latent, latent), self_layers=(latent,)) as rec:
                    unet(sample, t, encoder_hidden_states=ctx)
                return rec.harmonized()
            return run
        return setup

    def keep_eager(row, out):
        maps["eager"] = out
        return {}

    def rel_err(row, out):
        if "eager" not in maps:  # the eager step failed (out of memory) or did not run
            return {}
        a, b = out.double(), maps.pop("eager").double()
        return {"rel_err": float((a - b).norm() / b.norm())}

    # CPU steps take up to seconds: 2 timed runs after the warm-up.
    common = dict(unit="UNet step", group=shape, repeat=None if cuda else 2,
                  info={"dtype": str(dtype).replace("torch.", "")})
    return [Case("recorder", {"shape": shape, "impl": "unrecorded"}, setup=step(None), role="other", **common),
            Case("recorder", {"shape": shape, "impl": "eager"}, setup=step(EagerRecorder), role="reference",
                 check=keep_eager, **common),
            Case("recorder", {"shape": shape, "impl": "fasttrack"}, setup=step(AttentionRecorder),
                 check=rel_err, **common)]


