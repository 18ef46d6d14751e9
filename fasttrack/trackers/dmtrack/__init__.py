"""DMTrack (IJCAI 2024): diffusion mask-driven vision-language tracking, written from the paper
(the DMTrack paper, DESIGN.md 1.6), on fasttrack's kernels.

Modules: text (builtin hashed-word encoder, optional local BERT), mask_diffusion (the U-shaped
mask denoiser, DDPM / DDIM, double-sample training, structure loss), model (ViT, gated
cross-attention, feature filter, centre head), tracker (DMTrack), train (losses, batches),
fused (fused cross-attention, `fasttrack.patch` rule).
"""
from .model import DMTrackConfig, DMTrackNet
from .tracker import DMTrack

__all__ = ["DMTrack", "DMTrackConfig", "DMTrackNet"]
