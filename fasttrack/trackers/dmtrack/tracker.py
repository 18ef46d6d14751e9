"""`DMTrack`: the vision-language tracker (the DMTrack paper; DESIGN.md 1.6 and 3).

    tracker = DMTrack.pretrained()                    # the tiny model trained on synthetic + photo data
    tracker.init(frame0, [x, y, w, h], text="the small red wide box")
    box = tracker.update(frame1)                      # (4,) float32; tracker.score: IoU score
    tracker.init_batch(frame0, boxes, text=[...])     # K targets, one description each (or None)
    fasttrack.patch(tracker)                          # fused cross-attention, same boxes
    DMTrack.pretrained(samples=5)                     # K = 5 mask samplings averaged

Text: given at init (a string, or one per target for init_batch); `run(sequence, box)` (and so
`track`, `fasttrack eval`) takes a fasttrack Sequence's `text` (LaSOT nlp.txt, TNL2K
language.txt, OTB-Lang queries, synthetic descriptions) unless text= is given. Missing or empty
text: the target is tracked from vision only (its cross-attention is gated off) and the tracker
warns once (per tracker) that it does so. The description is encoded once per init.

One step, all targets at once, on the tracker's device: crop the search region (4x the box's
sqrt(w h)) out of the frame, embed it, run the ViT over [template, search], the gated
cross-attention over the text tokens, the diffusion mask module (K samplings as one batched
pass per DDIM step, the condition encoded once), the filter and the centre head, map the box back
to the frame and clip it. The template is the init frame's (OSTrack's). The step reads and
writes fixed tensors, so on a GPU the whole step, the denoising loop included, is captured once
in a CUDA graph (fasttrack.trackers.graph); the only host copy per frame is the (K, 6) result
row and the mask, read together.
Not run on a GPU yet: the graph path is unverified; the CPU path is tested.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn as nn

from ..base import Tracker
from ..checkpoint import (build_random, checked_load_state_dict, load_shipped, read_checkpoint,
                          save_checkpoint)
from ..detrack.crop import clip_boxes, crop_and_resize, crop_to_frame, frame_to_crop, frame_to_tensor
from ..graph import StepGraph
from .model import DMTrackConfig, DMTrackNet
from .text import clean_text

__all__ = ["DMTrack", "CHECKPOINT_FORMAT", "RUN_OPTIONS", "PRETRAINED_FILE"]

CHECKPOINT_FORMAT = "fasttrack.dmtrack/1"

_TINY = dict(dim=64, depth=4, heads=4, patch=8, template_size=32, search_size=64, text_len=12,
             vocab_size=2048, text_depth=1, cross_heads=4, mask_width=16)

# Config fields that change how a trained network runs, not its shapes (overridable on load).
RUN_OPTIONS = ("samples", "mask_steps", "center_window", "clip_margin", "filter_keep",
               "filter_floor", "bert_path")

PRETRAINED_FILE = "dmtrack_tiny.pt"


class DMTrack(Tracker, nn.Module):
    """DMTrack tracker (an nn.Module: `.to(device)`, `.half()`, `fasttrack.patch` apply).

    Args:
        config: DMTrackConfig (default DMTrack-256). use_graph: capture the step in a CUDA graph
            on GPU devices.
    Attributes: net (DMTrackNet), config, score / scores (IoU scores), masks ((K, G*G) mask of
    the last step, None without the diffusion module), vision_only ((K,) bool: targets without
    a description).
    """

    def __init__(self, config: DMTrackConfig | None = None, *, use_graph: bool = True):
        nn.Module.__init__(self)
        Tracker.__init__(self)
        if config is not None and not isinstance(config, DMTrackConfig):
            raise TypeError(f"config must be a DMTrackConfig, got {type(config).__name__}")
        self.config = config or DMTrackConfig()
        self.net = DMTrackNet(self.config)
        self.use_graph = use_graph
        self.masks: np.ndarray | None = None
        self.vision_only: np.ndarray | None = None
        self._st: dict | None = None
        self._graph: StepGraph | None = None
        self._pending_text = None
        self._warned = False

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def _build(cls, seed, device, dtype, **cfg):
        return build_random(cls, DMTrackConfig(**cfg), seed, device, dtype)

    @classmethod
    def dmtrack256(cls, seed: int = 0, device="cpu", dtype=torch.float32, **overrides) -> "DMTrack":
        """DMTrack-256: ViT-B/16, template 128 px, search 256 px, 16 x 16 mask, random weights
        from `seed` (the paper's weights were never released). device="meta": no memory."""
        return cls._build(seed, device, dtype, **overrides)

    @classmethod
    def tiny(cls, seed: int = 0, device="cpu", dtype=torch.float32, **overrides) -> "DMTrack":
        """Small model, random weights: C = 64, 4 heads, 4 blocks, patch 8, template 32 px,
        search 64 px (8 x 8 mask), 12 text tokens, U-net width 16 (about 0.6 M parameters).
        `pretrained()` is this model trained on synthetic and photo sequences."""
        return cls._build(seed, device, dtype, **{**_TINY, **overrides})

    @classmethod
    def pretrained(cls, device="cpu", dtype=torch.float32, **overrides) -> "DMTrack":
        """The tiny DMTrack trained here on fasttrack's synthetic and photo sequences with their generated
        descriptions (fasttrack/trackers/dmtrack/weights/; NOT the paper's weights): recipe
        and held-out numbers in the README. `overrides`: RUN_OPTIONS, e.g. samples=5."""
        return load_shipped(cls, __package__, PRETRAINED_FILE, device, dtype, overrides)

    @property
    def device(self) -> torch.device:
        return self.net.pos_x.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.pos_x.dtype

    def forward(self, z, x, text, has_text) -> dict:
        """Network forward (DMTrackNet.predict) with the configured K and S."""
        return self.net.predict(z, x, text, has_text)

    # -- text -------------------------------------------------------------------------------
    def _texts(self, text, k: int) -> list:
        if text is None or isinstance(text, str):
            return [text] * k
        if isinstance(text, (list, tuple)):
            if len(text) != k:
                raise ValueError(f"text holds {len(text)} descriptions for {k} targets")
            return list(text)
        raise TypeError(f"text must be a string, a list of K strings or None, got {type(text).__name__}")

    def init(self, image, box, text=None) -> None:
        """Start tracking one target; text: its description (None / "": vision only)."""
        if text is not None:
            self._pending_text = text
        try:
            super().init(image, box)
        finally:
            self._pending_text = None

    def init_batch(self, image, boxes, text=None) -> None:
        """Start tracking K targets; text: one string for all, K strings (or None) or None."""
        self._pending_text = text
        try:
            super().init_batch(image, boxes)
        finally:
            self._pending_text = None

    def initialize(self, image, info: dict) -> dict:
        """pytracking: info["init_bbox"] [x, y, w, h] and the description in info["init_text"]
        (or info["text"]), if any."""
        if isinstance(info, dict):
            self._pending_text = info.get("init_text", info.get("text"))
        try:
            return super().initialize(image, info)
        finally:
            self._pending_text = None

    def run(self, frames, box, *, text=None, **kwargs):
        """Tracker.run with the description: `text`, else the sequence's own `frames.text`."""
        if text is None:
            text = getattr(frames, "text", None)
        self._run_text = text
        try:
            return super().run(frames, box, **kwargs)
        finally:
            self._run_text = None

    # -- tracking ---------------------------------------------------------------------------
    def _frame_tensor(self, image) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(np.ascontiguousarray(image))
        return image.to(self.device)

    def _start(self, image, boxes: np.ndarray) -> None:
        cfg = self.config
        K = boxes.shape[0]
        text = self._pending_text
        if text is None:
            text = getattr(self, "_run_text", None)
        texts = [clean_text(t) for t in self._texts(text, K)]
        self.vision_only = np.array([t is None for t in texts])
        if self.vision_only.any() and not self._warned:
            self._warned = True
            warnings.warn(f"DMTrack: no description for {int(self.vision_only.sum())} of {K} "
                          "target(s); tracking them from vision only (the text cross-attention "
                          "is gated off). This warning is shown once per tracker.", stacklevel=5)
        frame_u8 = self._frame_tensor(image).clone()
        box = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            z, _, _, _ = crop_and_resize(frame_to_tensor(frame_u8), box, cfg.template_factor,
                                         cfg.template_size, self.dtype)
            tokens, has = self.net.encode_text(texts)
            self._st = {"frame": frame_u8, "box": box.clone(), "z": self.net.embed_template(z),
                        "text": tokens.to(self.dtype), "has_text": has.to(self.dtype),
                        "result": torch.zeros(K, 6, device=self.device),
                        "mask": torch.zeros(K, cfg.search_tokens, device=self.device)}
        self._graph = None
        self.masks = None

    def _step(self) -> None:
        cfg, net, st = self.config, self.net, self._st
        H, W = st["frame"].shape[:2]
        x_img, x0, y0, side = crop_and_resize(frame_to_tensor(st["frame"]), st["box"],
                                              cfg.search_factor, cfg.search_size, self.dtype)
        out = net.predict(st["z"], net.embed_search(x_img), st["text"], st["has_text"])
        box = clip_boxes(crop_to_frame(out["xyxy"], x0, y0, side), H, W, cfg.clip_margin)
        st["box"].copy_(box)
        st["result"].copy_(torch.cat([box, out["iou_score"][:, None], out["peak"][:, None]], 1))
        if out["mask"] is not None:
            st["mask"].copy_(out["mask"])

    def _graph_key(self):
        return (tuple(id(m) for m in self.net.modules()), self.dtype, self.device, self.training, self.precision,
                self._st["box"].shape[0], self.config.samples, self.config.mask_steps)

    def _advance(self, image):
        st = self._st
        if st["frame"].device != self.device or st["z"].dtype != self.dtype:
            raise ValueError("the tracker moved to another device or dtype after init; call init again")
        st["frame"].copy_(self._frame_tensor(image))
        key = self._graph_key()
        if self._graph is None or self._graph.key != key:
            state = [st["frame"], st["box"], st["result"], st["mask"]]
            self._graph = StepGraph(self._step, state, key, use_graph=self.use_graph)
        with torch.no_grad():
            self._graph()
        # one read: the result row and the mask together
        parts = [st["result"].float()] + ([st["mask"].float()] if self.net.mask is not None else [])
        host = torch.cat(parts, 1).cpu().numpy()
        if self.net.mask is not None:
            self.masks = host[:, 6:].copy()
        return host[:, :4], host[:, 4]

    # -- run options ------------------------------------------------------------------------
    def set_run_options(self, **options) -> "DMTrack":
        """Change run options (RUN_OPTIONS except bert_path) of a built tracker, e.g.
        samples=5; checked like the config. Returns self."""
        import dataclasses

        bad = sorted(set(options) - set(RUN_OPTIONS) | ({"bert_path"} & set(options)))
        if bad:
            raise ValueError(f"cannot change {bad} on a built DMTrack; run options are "
                             f"{[o for o in RUN_OPTIONS if o != 'bert_path']}")
        self.config = dataclasses.replace(self.config, **options)
        self.net.cfg = self.config
        self._graph = None
        return self

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, path, meta: dict | None = None) -> None:
        """Write {"format", "config", "state_dict", "meta"} (tensors on CPU) to `path`."""
        save_checkpoint(self, self.config, CHECKPOINT_FORMAT, path, meta)

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu", **overrides) -> "DMTrack":
        """Build the tracker a `save` file (or `fasttrack train dmtrack` output) describes and
        load its weights; `overrides` may set RUN_OPTIONS (bert_path: where the BERT folder is
        on this machine)."""
        ckpt = read_checkpoint(path, "DMTrack", (CHECKPOINT_FORMAT,), RUN_OPTIONS, overrides, map_location)
        tracker = cls(DMTrackConfig(**{**ckpt["config"], **overrides}))
        tracker.load_state_dict(ckpt["state_dict"])
        return tracker.to(map_location)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """nn.Module.load_state_dict that also takes a checkpoint path or a `save` dict, with a
        ValueError naming `state_dict` listing every missing / unexpected key and shape mismatch."""
        result = checked_load_state_dict(self, state_dict, strict, assign, "DMTrack")
        self._graph = None
        return result
