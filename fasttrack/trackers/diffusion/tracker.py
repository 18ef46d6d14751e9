"""`DiffusionTracker`: what Diff-Tracker and DINTR share as trackers.

Both hold Stable Diffusion components (`SDComponents`), read attention maps of their UNet at an
R x R grid through one `MapReader`, and end every frame with one device-to-host copy of the
(K, 5) boxes and scores. Like every fasttrack tracker they are plain PyTorch until
`fasttrack.patch(tracker, backend=...)`, which patches their models (`_patch_roots`: the VAE, the
UNet and the tracker's learned modules); the map reader then records through the fused kernels
(`fasttrack.AttentionRecorder`) instead of materializing every map (`EagerRecorder`), with the
same maps up to rounding. `fasttrack.unpatch(tracker)` switches back, `fasttrack.is_patched`
(or `tracker.patched`) tells which path runs.
"""
from __future__ import annotations

import abc

import torch

from ..base import Tracker
from .maps import MapReader
from .sd import SDComponents
from .serialization import SerializationMixin

__all__ = ["DiffusionTracker"]


class DiffusionTracker(SerializationMixin, Tracker):
    """Base of the diffusion trackers. Subclasses call `__init__(components, resolution,
    cross_layers, self_layers, tokens)` and implement `_start` and `_step(image) -> (boxes (K, 4),
    scores (K,))` as device tensors."""

    max_targets = None

    def __init__(self, components: SDComponents, *, resolution: int | None, cross_layers,
                 self_layers, tokens):
        super().__init__()
        if not isinstance(components, SDComponents):
            raise TypeError(f"components must be SDComponents, got {type(components).__name__}")
        self.sd = components
        self.device, self.dtype = components.device, components.dtype
        self.resolution = int(resolution or components.latent_size)
        self.cross_layers, self.self_layers = cross_layers, self_layers
        self.reader = MapReader(components.unet, resolution=self.resolution, cross_layers=cross_layers,
                                self_layers=self_layers, tokens=tokens)
        # Capture a tracker's frame step in a CUDA graph on GPU devices (fasttrack.trackers.graph;
        # Diff-Tracker; the capture has not run on a GPU yet). Set False to run it eagerly.
        self.use_graph = True

    def channels_last(self) -> "DiffusionTracker":
        """Store the VAE's and UNet's convolution weights channels-last (NHWC), the layout GPU
        tensor cores and oneDNN convolve fastest; activations follow the weights. Same boxes up
        to convolution rounding (on this project's CPU: the same boxes). Returns self. Not yet
        timed on a GPU."""
        self.sd.vae.to(memory_format=torch.channels_last)
        self.sd.unet.to(memory_format=torch.channels_last)
        return self

    def _patch_roots(self) -> list[torch.nn.Module]:
        """The models `fasttrack.patch(tracker)` acts on."""
        return [self.sd.vae, self.sd.unet, *self._modules_to_save().values()]

    @property
    def patched(self) -> bool:
        """Whether the UNet runs fasttrack's fused kernels (`fasttrack.patch(tracker)`)."""
        return self.reader.patched

    @abc.abstractmethod
    def _step(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame, all on the device: boxes (K, 4) and scores (K,) as device tensors."""

    def _read_back(self) -> torch.Tensor | None:
        """(K, E) float32 device tensor read back with the boxes at the end of a frame (the
        frame's only host read), for host-side work of the next frame (DINTR's crop windows);
        its host copy lands in `self._host_extra` ((K, E) float32 ndarray). None: nothing."""
        return None

    def _advance(self, image):
        boxes, scores = self._step(image)
        extra = self._read_back()
        parts = [boxes.float(), scores.float()[:, None]] + ([] if extra is None else [extra.float()])
        host = torch.cat(parts, 1).cpu().numpy()   # the frame's only host read
        self._host_extra = None if extra is None else host[:, 5:]
        return host[:, :4], host[:, 4]
