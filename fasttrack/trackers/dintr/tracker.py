"""DINTR: tracking via diffusion-based interpolation (Nguyen et al., NeurIPS 2024;
DESIGN 1.5) on fasttrack.

Init frame: each target's indication (point, box or mask, indication.py) becomes a ground-truth
map on the R x R attention grid, and the target's condition token (inserted after the start
token of the empty prompt) is learned in place so that the target's averaged map S^T C on the
frame's latents matches it (Adam, `init_steps`, UNet frozen).

Each new frame k+1: its latents z_{k+1} are reached from z_k by the interpolation process with
the offset operator (interpolation.py), S steps; the UNet runs at every interpolated state with
the targets' tokens, and the self and cross maps of the chosen layers (default: all) are
averaged over layers and steps and combined as S_bar^T C_bar (DESIGN 1.2; the seed's
"element-wise product", read as in DESIGN 1.5). Each target's map is then mapped to a point, box
or mask (Eq. 12). `score` is the share of the map's mass inside the box.

Several targets (appendix D): their tokens are concatenated along the batch axis of one UNet
pass and the maps split back by index. The batch axis, not the token axis: tokens sharing one
softmax would change each other's maps, while batch rows reproduce K single runs exactly (the
"concatenate into a joint input, split by index" of D.28-D.29 with targets kept independent).
"""
from __future__ import annotations

import numpy as np
import torch

from ..base import as_image
from ..diffusion.boxes import masks_to_boxes
from ..diffusion.prompt_learning import initial_prompt, insert_prompt, learn_prompt, normalized_mse
from ..diffusion.sd import SDComponents, preprocess
from ..diffusion.serialization import write_tracker_folder
from ..diffusion.tracker import DiffusionTracker
from .indication import check_indication, check_masks, extract, indicator_maps
from .interpolation import OFFSETS, interpolate, interpolation_timesteps

__all__ = ["DINTR"]

_TINY_SETTINGS = dict(init_steps=3, num_steps=3)


class DINTR(DiffusionTracker):
    """DINTR. Build with `from_pretrained(sd_folder)` (any Stable Diffusion) or `tiny(seed)`;
    plain PyTorch until `fasttrack.patch(tracker)` (fasttrack.trackers.diffusion.tracker).

    Args:
        components: SDComponents (VAE, UNet, empty-prompt context, schedule).
        indication: "point", "box" or "mask": how targets are injected and read out.
        num_steps: S, interpolation steps per frame (the DDIM steps the maps average over).
        max_timestep: UNet timestep label of the first interpolated state.
        offset: "anchor" (exact offset between the two frames' latents) or "predicted" (the
            UNet output as the learned offset; for UNets fine-tuned with Eq. 7).
        resolution: map grid R (default: the latent size).
        cross_layers, self_layers: recorded layers (default: all of them).
        init_steps, lr: Adam steps and learning rate of the init-frame token learning.
        threshold: activation threshold of the normalized map (box and mask).
    After each step: `scores` (K,), `points` (K, 2) [x, y] (indication "point") and `masks`
    (K, H, W) bool device tensor (indication "mask").
    """

    _folder = "fasttrack_dintr"
    _config_keys = ("indication", "num_steps", "max_timestep", "offset", "resolution", "cross_layers",
                    "self_layers", "init_steps", "lr", "threshold")

    def __init__(self, components: SDComponents, *, indication: str = "box", num_steps: int = 5,
                 max_timestep: int = 250, offset: str = "anchor", resolution: int | None = None,
                 cross_layers="all", self_layers="all", init_steps: int = 20, lr: float = 5e-3,
                 threshold: float = 0.5):
        super().__init__(components, resolution=resolution, cross_layers=cross_layers,
                         self_layers=self_layers, tokens=[1])
        self.indication = check_indication(indication)
        if offset not in OFFSETS:
            raise ValueError(f"offset must be one of {OFFSETS}, got {offset!r}")
        n_train = components.alphas_cumprod.shape[0]
        if not isinstance(max_timestep, int) or not 1 <= max_timestep < n_train:
            raise ValueError(f"max_timestep must be an int in [1, {n_train}), got {max_timestep!r}")
        self._timesteps = interpolation_timesteps(num_steps, max_timestep)
        if not isinstance(init_steps, int) or init_steps < 0:
            raise ValueError(f"init_steps must be an int >= 0, got {init_steps!r}")
        if not 0.0 < float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
        self.num_steps, self.max_timestep, self.offset = num_steps, max_timestep, offset
        self.init_steps, self.lr, self.threshold = init_steps, float(lr), float(threshold)
        self._t = [torch.tensor(t, device=self.device) for t in self._timesteps]
        self.tokens = None
        self.points = self.masks = None
        self._init_masks = None

    @classmethod
    def _tiny_setup(cls, path, seed):
        write_tracker_folder(path, cls._folder, _TINY_SETTINGS, {})

    # ------------------------------------------------------------------ public extras
    def init_masks(self, image, masks) -> None:
        """Start tracking K targets given by masks (K, H, W) (or one (H, W) mask): their boxes
        are the masks' bounding boxes; with indication "mask" the masks themselves are injected."""
        image, size = as_image(image)
        m = check_masks(masks, size)
        boxes, _ = masks_to_boxes(m > 0)
        self._init_masks = m
        try:
            self._begin(image, size, boxes.numpy().astype(np.float64))
        finally:
            self._init_masks = None

    # ------------------------------------------------------------------ tracker hooks
    def _encode(self, image) -> torch.Tensor:
        with torch.no_grad():
            return self.sd.encode(preprocess(image, self.sd.image_size, self.device, self.dtype))

    def _context(self, tokens: torch.Tensor) -> torch.Tensor:
        return insert_prompt(self.sd.null_context, tokens.to(self.dtype))

    def _start(self, image, boxes) -> None:
        H, W = int(image.shape[0]), int(image.shape[1])
        self._image_size = (H, W)
        K = boxes.shape[0]
        b = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        z = self._encode(image)
        masks = None if self._init_masks is None else self._init_masks.to(self.device)
        gt = indicator_maps(self.indication, b, (H, W), (self.resolution,) * 2, masks)
        S = len(self._t)

        def loss_fn(tokens, step):
            with self.reader.start():
                self.sd.unet(z.expand(K, -1, -1, -1), self._t[step % S],
                             encoder_hidden_states=self._context(tokens))
            return normalized_mse(self.reader.self_cross(), gt)

        self.tokens, self.loss_history = learn_prompt(initial_prompt(self.sd.null_context, K), loss_fn,
                                                      self.init_steps, self.lr)
        self._z = z
        self._boxes = b
        self.points = b[:, :2] + b[:, 2:] / 2
        self.masks = None

    def _step(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame, all on the device: boxes (K, 4) and scores (K,) as device tensors."""
        z_next = self._encode(image)
        K = self.tokens.shape[0]
        ctx = self._context(self.tokens)

        def step_fn(x, s, _ts):
            return self.sd.unet(x, self._t[s], encoder_hidden_states=ctx).sample

        with torch.no_grad():
            with self.reader.start():
                for _ in interpolate(self._z.expand(K, -1, -1, -1), z_next.expand(K, -1, -1, -1),
                                     self.num_steps, step_fn, mode=self.offset,
                                     max_timestep=self.max_timestep):
                    pass
            maps = self.reader.self_cross()
            out = extract(self.indication, maps, self._image_size, self._boxes, self.threshold)
        self._z = z_next
        self._boxes = out["boxes"]
        self.points = out.get("points")
        self.masks = out.get("masks")
        return out["boxes"], out["scores"]
