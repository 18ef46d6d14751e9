"""One UNet pass with recorded attention maps, patched or unpatched: what both trackers share.

`MapReader` owns the choice between the two paths of the same model:
- patched (default): `fasttrack.patch(unet, backend=...)` and `fasttrack.AttentionRecorder`:
  fused attention, no N x N map, backward through the fused kernels;
- unpatched: the model's own diffusers processors and `EagerRecorder`, the materializing
  Prompt-to-Prompt-style path (fasttrack.recorder.eager).
Both record the same layers at the same output grid and return the same maps up to rounding.
"""
from __future__ import annotations

import torch

import fasttrack

from ...recorder.eager import EagerRecorder

__all__ = ["MapReader"]


class MapReader:
    """Runs the UNet under a recorder and returns its maps.

    Args:
        unet: diffusers UNet2DConditionModel (frozen).
        resolution: output grid R of the maps.
        cross_layers, self_layers: layer selectors (see fasttrack.AttentionRecorder).
        tokens: token positions kept from the cross maps (the prompt tokens).
        patched: fused path (True) or eager materializing path (False).
        backend: fasttrack backend of the patched path ("auto", "cuda", "triton", "torch").
    """

    def __init__(self, unet, *, resolution: int, cross_layers, self_layers, tokens, patched: bool = True,
                 backend: str = "auto"):
        self.unet = unet
        self.kw = dict(resolution=resolution, cross_layers=cross_layers, self_layers=self_layers,
                       tokens=list(tokens))
        self.backend = backend
        self.set_patched(patched)

    def set_patched(self, patched: bool, backend: str | None = None) -> None:
        """Switch the UNet between the fused and the unpatched path (in place)."""
        if backend is not None:
            self.backend = backend
        if patched:
            if fasttrack.is_patched(self.unet):
                fasttrack.unpatch(self.unet)
            fasttrack.patch(self.unet, backend=self.backend)
            self.recorder = fasttrack.AttentionRecorder(self.unet, **self.kw)
        else:
            if fasttrack.is_patched(self.unet):
                fasttrack.unpatch(self.unet)
            self.recorder = EagerRecorder(self.unet, **self.kw)
        self.patched = bool(patched)

    def run(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor):
        """One recorded UNet call. latents (B, C, h, w); timestep 0-d tensor; context (B, L, D).
        Returns the UNet output (B, C, h, w); maps are read with `harmonized` / `self_cross`."""
        self.recorder.reset()
        with self.recorder:
            return self.unet(latents, timestep, encoder_hidden_states=context).sample

    def start(self):
        """Start a recording spanning several UNet calls (DINTR's averages over steps): returns
        the recorder context; call `self.unet(...)` inside it."""
        self.recorder.reset()
        return self.recorder

    def harmonized(self, alpha: float) -> torch.Tensor:
        """(B, R, R): the prompt tokens' harmonized maps, averaged over those tokens."""
        return self.recorder.harmonized(alpha).mean(1)

    def self_cross(self) -> torch.Tensor:
        """(B, R, R): the prompt tokens' S^T C maps, averaged over those tokens."""
        return self.recorder.self_cross().mean(1)
