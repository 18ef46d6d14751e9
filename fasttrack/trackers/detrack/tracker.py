"""`DeTrack`: the tracker (DESIGN.md 1.4 and 3): state, the per-frame step, checkpoints.

    tracker = DeTrack.pretrained()              # the tiny model trained on synthetic + photo data
    tracker = DeTrack.tiny(seed=0)              # random weights; or detrack256() / detrack384()
    tracker.init(frame0, [x, y, w, h])
    box = tracker.update(frame1)                # (4,) float32, confidence in tracker.score
    tracker.init_batch(frame0, boxes)           # (K, 4): K targets, one forward per frame
    boxes = tracker.update_batch(frame1)        # (K, 4)
    fasttrack.patch(tracker)                    # fused box branches, same boxes

One step, for all K targets at once, entirely on the tracker's device: crop the search regions
(4x the box's sqrt(w h)) out of the frame, embed them, denoise the box tokens through the ViT,
refine them with the trajectory memory, map them to a box, map that back to the frame and clip
it, then crop the new template (2x) and let the score gate refresh the visual memory. The step
reads and writes fixed tensors, so on a GPU it is captured once in a CUDA graph (fasttrack.trackers.graph); the
only device-to-host copy per frame is the (K, 6) result row (box, IoU score, softmax score).
`tracker.score` is the predicted IoU score; `tracker.softmax_scores` holds the other one.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..base import Tracker
from ..checkpoint import (build_random, checked_load_state_dict, load_shipped, read_checkpoint,
                          save_checkpoint)
from .crop import clip_boxes, crop_and_resize, crop_to_frame, frame_to_crop, frame_to_tensor
from ..graph import StepGraph
from .memory import VisualMemory, score_gate
from .model import DeTrackConfig, DeTrackNet

__all__ = ["DeTrack", "CHECKPOINT_FORMAT"]

# /2: box_query (the per-coordinate identity, DESIGN.md 1.7) and denoise_steps; /1 files lack
# the query embedding and were written by a network that could not learn to localize.
# /3: config.box_head and center_window (a /2 file is a "bins" model and still loads).
CHECKPOINT_FORMAT = "fasttrack.detrack/3"
READABLE_FORMATS = ("fasttrack.detrack/2", CHECKPOINT_FORMAT)

_TINY = dict(dim=64, depth=4, heads=4, patch=8, template_size=32, search_size=64, n_bins=128,
             refine_depth=2, refine_heads=4)

# Config fields that change how a trained network is run, not its shapes: pretrained() and
# from_checkpoint() accept them as overrides.
RUN_OPTIONS = ("denoise_steps", "infer_t", "iou_gate", "softmax_gate", "clip_margin",
               "center_window")

PRETRAINED_FILE = "detrack_tiny.pt"


class DeTrack(Tracker, nn.Module):
    """DeTrack tracker (an nn.Module: `.to(device)`, `.half()`, `fasttrack.patch` apply).

    Args:
        config: model sizes (DeTrackConfig); default DeTrack256.
        use_graph: capture the step in a CUDA graph on GPU devices.
    Attributes: net (DeTrackNet), config, score / scores (IoU scores), softmax_scores.
    """

    def __init__(self, config: DeTrackConfig | None = None, *, use_graph: bool = True):
        nn.Module.__init__(self)
        Tracker.__init__(self)
        if config is not None and not isinstance(config, DeTrackConfig):
            raise TypeError(f"config must be a DeTrackConfig, got {type(config).__name__}")
        self.config = config or DeTrackConfig()
        self.net = DeTrackNet(self.config)
        self.use_graph = use_graph
        self.softmax_scores: np.ndarray | None = None
        self._st: dict | None = None
        self._memory: VisualMemory | None = None
        self._graph: StepGraph | None = None

    # -- constructors -----------------------------------------------------------------------
    @classmethod
    def _build(cls, seed, device, dtype, **cfg):
        return build_random(cls, DeTrackConfig(**cfg), seed, device, dtype)

    @classmethod
    def detrack256(cls, seed: int = 0, device="cpu", dtype=torch.float32, **overrides) -> "DeTrack":
        """DeTrack256: ViT-B, template 128 px, search 256 px, 800 bins (random weights from
        `seed`; load trained ones with load_state_dict / from_checkpoint). device="meta" builds
        it without memory (FLOP counting)."""
        return cls._build(seed, device, dtype, **overrides)

    @classmethod
    def detrack384(cls, seed: int = 0, device="cpu", dtype=torch.float32, **overrides) -> "DeTrack":
        """DeTrack384: ViT-B, template 192 px, search 384 px, 1200 bins."""
        cfg = dict(template_size=192, search_size=384, n_bins=1200)
        cfg.update(overrides)
        return cls._build(seed, device, dtype, **cfg)

    @classmethod
    def tiny(cls, seed: int = 0, device="cpu", dtype=torch.float32, **overrides) -> "DeTrack":
        """Small model with random weights from `seed` (tests, training from scratch): C = 64,
        4 heads, 4 blocks, patch 8, template 32 px, search 64 px, 128 bins, 2 refine layers,
        about 0.5 M parameters. Its boxes mean nothing until trained: `pretrained()` is this
        model trained on synthetic and photo sequences."""
        cfg = dict(_TINY)
        cfg.update(overrides)
        return cls._build(seed, device, dtype, **cfg)

    @classmethod
    def pretrained(cls, device="cpu", dtype=torch.float32, **overrides) -> "DeTrack":
        """The tiny DeTrack trained here on fasttrack's synthetic and photo sequences (shipped inside the
        package, fasttrack/trackers/detrack/weights/; NOT the paper's weights, which were never
        released): see the README for its recipe and held-out numbers. `overrides` may set the
        run options in RUN_OPTIONS, e.g. denoise_steps=24 for the multi-pass sampler."""
        return load_shipped(cls, __package__, PRETRAINED_FILE, device, dtype, overrides)

    @property
    def device(self) -> torch.device:
        return self.net.box_noise.device

    @property
    def dtype(self) -> torch.dtype:
        return self.net.pos_x.dtype

    def forward(self, z: torch.Tensor, x: torch.Tensor, prior_xyxy: torch.Tensor,
                traj_xyxy: torch.Tensor) -> dict:
        """Network forward (see DeTrackNet.predict): z (B, K, Nz, C) template tokens, x (B, Nx, C)
        search tokens, prior (B, 4) and traj (B, T, 4) crop-normalized xyxy."""
        return self.net.predict(z, x, prior_xyxy, traj_xyxy)

    # -- tracking ---------------------------------------------------------------------------
    def _frame_tensor(self, image) -> torch.Tensor:
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(np.ascontiguousarray(image))
        return image.to(self.device)

    def _start(self, image, boxes: np.ndarray) -> None:
        cfg = self.config
        frame_u8 = self._frame_tensor(image).clone()
        box = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            z, _, _, _ = crop_and_resize(frame_to_tensor(frame_u8), box, cfg.template_factor,
                                         cfg.template_size, self.dtype)
            self._memory = VisualMemory(self.net.embed_template(z), cfg.n_templates)
        K = box.shape[0]
        self._st = {
            "frame": frame_u8,
            "box": box.clone(),
            "traj": box[:, None].repeat(1, cfg.traj_len, 1).contiguous(),
            "result": torch.zeros(K, 6, device=self.device),
        }
        self._graph = None
        self.softmax_scores = np.ones(K, dtype=np.float32)

    def _step(self) -> None:
        """One frame for all targets, reading and writing only the fixed state tensors."""
        cfg, net, st = self.config, self.net, self._st
        H, W = st["frame"].shape[:2]
        frame = frame_to_tensor(st["frame"])
        x_img, x0, y0, side = crop_and_resize(frame, st["box"], cfg.search_factor, cfg.search_size,
                                              self.dtype)
        prior = frame_to_crop(st["box"], x0, y0, side)
        traj = frame_to_crop(st["traj"], x0, y0, side)
        out = net.predict(self._memory.tokens, net.embed_search(x_img), prior, traj)
        box = clip_boxes(crop_to_frame(out["xyxy"], x0, y0, side), H, W, cfg.clip_margin)
        z_img, _, _, _ = crop_and_resize(frame, box, cfg.template_factor, cfg.template_size,
                                         self.dtype)
        gate = score_gate(out["iou_score"], out["softmax_score"], cfg.iou_gate, cfg.softmax_gate)
        self._memory.update(net.embed_template(z_img), gate)
        st["traj"].copy_(torch.cat([st["traj"][:, 1:], box[:, None]], 1))
        st["box"].copy_(box)
        st["result"].copy_(torch.cat([box, out["iou_score"][:, None], out["softmax_score"][:, None]], 1))

    def _graph_key(self):
        return (tuple(id(m) for m in self.net.modules()), self.dtype, self.device, self.training, self.precision,
                self._st["box"].shape[0])

    def _advance(self, image):
        st = self._st
        if st["frame"].device != self.device or self._memory.tokens.dtype != self.dtype:
            raise ValueError("the tracker moved to another device or dtype after init; call init "
                             "again")
        st["frame"].copy_(self._frame_tensor(image))
        key = self._graph_key()
        if self._graph is None or self._graph.key != key:
            state = [st["frame"], st["box"], st["traj"], st["result"], *self._memory.tensors()]
            self._graph = StepGraph(self._step, state, key, use_graph=self.use_graph)
        with torch.no_grad():
            self._graph()
        # copy=True: on CPU .cpu() would alias the state tensor, which the next step overwrites
        res = st["result"].to("cpu", copy=True).numpy()
        self.softmax_scores = res[:, 5].copy()
        return res[:, :4], res[:, 4]

    # -- checkpoints ------------------------------------------------------------------------
    def save(self, path, meta: dict | None = None) -> None:
        """Write {"format", "config", "state_dict", "meta"} (tensors on CPU) to `path`; `meta`
        is free-form plain data (how the weights were made, their held-out numbers)."""
        save_checkpoint(self, self.config, CHECKPOINT_FORMAT, path, meta)

    @classmethod
    def from_checkpoint(cls, path, map_location="cpu", **overrides) -> "DeTrack":
        """Build the tracker a `save` file (or a `fasttrack train` checkpoint) describes and
        load its weights; `overrides` may set the run options in RUN_OPTIONS."""
        ckpt = read_checkpoint(path, "DeTrack", READABLE_FORMATS, RUN_OPTIONS, overrides, map_location,
                               " (format 1 predates the box query embedding: retrain with "
                               "`fasttrack train detrack`)")
        tracker = cls(DeTrackConfig(**{**ckpt["config"], **overrides}))
        tracker.load_state_dict(ckpt["state_dict"])
        return tracker.to(map_location)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """nn.Module.load_state_dict that also takes a checkpoint path or a `save` dict, and
        whose mismatch error (ValueError naming `state_dict`) lists every missing key,
        unexpected key and shape mismatch."""
        result = checked_load_state_dict(self, state_dict, strict, assign, "DeTrack")
        self._graph = None
        return result
