"""One UNet pass with recorded attention maps, fused or eager: what both trackers share.

`MapReader` records the same layers at the same output grid on either path of one model, chosen
by the model's state at each call:
- the UNet is patched (`fasttrack.patch(tracker)` or `fasttrack.patch(unet)`, any backend):
  `fasttrack.AttentionRecorder`: fused attention, no N x N map, backward through the fused kernels;
- it is not: `fasttrack.recorder.EagerRecorder` on the model's own processors: the
  materializing, Prompt-to-Prompt-style path.
Both return the same maps up to rounding.
"""
from __future__ import annotations

import torch

from ...patch import is_patched
from ...recorder import AttentionRecorder, EagerRecorder

__all__ = ["MapReader"]


class MapReader:
    """Runs the UNet under a recorder and returns its maps.

    Args:
        unet: diffusers UNet2DConditionModel (frozen).
        resolution: output grid R of the maps.
        cross_layers, self_layers: layer selectors (see fasttrack.AttentionRecorder).
        tokens: token positions kept from the cross maps (the prompt tokens).
    """

    def __init__(self, unet, *, resolution: int, cross_layers, self_layers, tokens):
        self.unet = unet
        self.kw = dict(resolution=resolution, cross_layers=cross_layers, self_layers=self_layers,
                       tokens=list(tokens))
        self._recorders: dict[bool, object] = {}
        self._active = None

    @property
    def patched(self) -> bool:
        """Whether the next recording takes the fused path (the UNet is patched)."""
        return is_patched(self.unet)

    def _recorder(self):
        """The recorder of the UNet's current path (built once per path), reset."""
        fused = self.patched
        rec = self._recorders.get(fused)
        if rec is None:
            rec = self._recorders[fused] = (AttentionRecorder if fused else EagerRecorder)(self.unet, **self.kw)
        rec.reset()
        self._active = rec
        return rec

    def run(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor):
        """One recorded UNet call. latents (B, C, h, w); timestep 0-d tensor; context (B, L, D).
        Returns the UNet output (B, C, h, w); maps are read with `harmonized` / `self_cross`."""
        with self._recorder():
            return self.unet(latents, timestep, encoder_hidden_states=context).sample

    def start(self):
        """Start a recording spanning several UNet calls: returns the recorder context; call
        `self.unet(...)` inside it."""
        return self._recorder()

    def _results(self):
        if self._active is None:
            raise ValueError("nothing recorded yet: call run() or record inside start() first")
        return self._active

    def harmonized(self, alpha: float, normalize: bool = False, groups: int = 1) -> torch.Tensor:
        """(B / groups, R, R): the prompt tokens' harmonized maps, averaged over those tokens
        (normalize: S^T C divided by the attention each pixel receives, AttentionRecorder.
        self_cross; groups: the batch is `groups` consecutive groups of rows recorded as if in
        separate calls, their self and cross maps averaged before the product, fasttrack.recorder.
        base.Recorder.self_cross: DINTR's timestep labels in one batch)."""
        return self._results().harmonized(alpha, normalize, groups).mean(1)

    def self_cross(self, normalize: bool = False, groups: int = 1) -> torch.Tensor:
        """(B / groups, R, R): the prompt tokens' S^T C maps, averaged over those tokens."""
        return self._results().self_cross(normalize, groups).mean(1)
