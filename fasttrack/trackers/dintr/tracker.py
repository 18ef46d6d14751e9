"""DINTR: tracking via diffusion-based interpolation (Nguyen et al., NeurIPS 2024;
DESIGN 1.5) on fasttrack.

Init frame: each target's indication (point, box or mask, indication.py) becomes a ground-truth
map on the R x R attention grid, and the target's condition token (inserted after the start
token of the empty prompt) is learned so that the target's map S^T C on the frame's latents
matches it (Adam, `init_steps`).

Each new frame k+1, with latents z_{k+1} (the paper's algorithm D.4/D.5, in this order):
1. online in-place fine-tuning (`finetune_steps` > 0): Adam steps on Eq. 7,
   ||(z_k - z_{k+1}) - psi(x_t, t, tau)||^2 over the interpolated states x_t of the pair
   (interpolation.py), on the UNet parameters `finetune_params` ("attention": every attention
   projection; "cross": the cross-attentions' key / value projections; "all"), learning rate
   `finetune_lr`. Patched, the backward runs through fasttrack's fused attention (no N x N map;
   tested on the CPU only: the GPU path, and the float32 master copies of half-precision
   models, have never run on a GPU and are unverified). The optimizer is torch.optim.Adam's
   update with its step count on the host (prompt_learning.HostStepAdam: no host read).
   What the fine-tuning is for is psi, the offset of the "predicted" path (step 2); with the
   "anchor" offset psi is never used and the fine-tuned weights only change the readout's maps
   as a side effect, so `finetune_steps=None` (the default) means one step with "predicted" and
   none with "anchor" (the paper's setting, one step with the anchor offset, stays available
   as `finetune_steps=1`).
   The weights go back to the loaded ones at every `init`: each sequence starts from the
   pretrained model.
2. the interpolation process to the next frame: offset "anchor" ends at x_0 = z_{k+1} exactly;
   "predicted" runs x_{t-1} = x_t - psi(x_t) / S with the fine-tuned UNet as psi.
3. the readout at x_0, the next frame's latent, not along the path (a map averaged over
   x_S .. x_1 unions both frames: DESIGN 1.7): the UNet runs at x_0 with the targets' tokens at
   the S timestep labels of the path (one call of batch S K: the labels are batch rows), the
   self and cross maps of the chosen layers averaged over layers and labels and combined as
   S_bar^T C_bar (DESIGN 1.2; the recorder averages over the label groups before the product,
   so the maps are those of one call per label; divided by the attention each pixel receives
   with `normalize`), then read by the diffusion trackers' readout
   (diffusion.readout: the region holding the peak near the previous box) into a point, box or
   mask (Eq. 12).
4. the indication re-extracted: the new point / box / mask becomes the target's indicator map
   on frame k+1 and its token takes `reinject_steps` Adam steps towards it (the paper
   re-injects the indication of each frame as the condition of the next pair; off in the
   shipped tiny-sd settings, where the re-fitted token follows its own misreads: val AO 0.47
   with it, 0.54 without, tiny_sd.TRACKER_SETTINGS).
Search-region crops (`context` > 0, diffusion.crops; not in the paper, which feeds the whole
frame): every step above runs on a square of side context x max(w, h) around each target's
previous box (moved by the readout's velocity estimate with `motion` > 0), resized to the
UNet's input, instead of the whole frame: the target keeps about 1 / context of the input's
side whatever its size in the frame, and objects far from it are not in the input. The pair
of step 1 (and the path of the "predicted" offset) is both frames seen through the new frame's
window: the previous frame, kept on the device, is encoded again through it (skipped when
neither needs it: "anchor" without fine-tuning). The readout reads each map in its window and
returns image pixels.
Host and device: a frame uploads the frame once and reads nothing back until its results. The
crop geometry is host arithmetic (diffusion.crops): the boxes the next frame's crops are
centred on (the readout's `predicted` boxes) are read back with each frame's boxes and scores
(`_read_back`), and the next frame computes its windows from that host copy (from the init
boxes on the first), the same float32 numbers as the device windows the readout uses.
Pose and text indications need inputs this pipeline does not have (no pose estimator; a text
prompt gives the start of a box search, not a box: the paper's D.28 text handling), so they
are not offered.

Several targets (appendix D): their tokens are concatenated along the batch axis of one UNet
pass and the maps split back by index. The batch axis, not the token axis: tokens sharing one
softmax would change each other's maps, while batch rows keep the targets' maps apart. The
fine-tuning loss sums over the targets (one UNet for all of them, as in the paper), so with
`finetune_steps` > 0 K targets tracked together are not exactly K single runs.
The fine-tuned weights stay in the UNet until the next `init`: do not run another tracker on
the same components in between (DINTR's own inits restore the loaded weights, recorded on the
UNet by the first DINTR built on it).
"""
from __future__ import annotations

import numpy as np
import torch

from ..base import as_image
from ..diffusion.boxes import masks_to_boxes
from ..diffusion.crops import check_context, crop_images, crop_windows, to_window, window_side
from ..diffusion.prompt_learning import HostStepAdam, initial_prompt, insert_prompt, learn_prompt, normalized_mse
from ..diffusion.sd import SDComponents, preprocess
from ..diffusion.readout import BoxReader, check_readout
from ..diffusion.serialization import write_tracker_folder
from ..diffusion.tracker import DiffusionTracker
from ..graph import StepGraph
from .indication import check_indication, check_masks, extract, indicator_maps
from .interpolation import OFFSETS, blend, interpolate, interpolation_timesteps, offset_loss

__all__ = ["DINTR"]

_TINY_SETTINGS = dict(init_steps=3, num_steps=3, finetune_steps=1, reinject_steps=1)
FINETUNE_PARAMS = ("attention", "cross", "all")
_KEEP_LOSSES = 1000   # finetune_losses keeps the last this many steps (long videos)


def _finetune_parameters(unet, which: str) -> dict:
    """name -> parameter of the UNet that the online fine-tuning updates."""
    if which not in FINETUNE_PARAMS:
        raise ValueError(f"finetune_params must be one of {FINETUNE_PARAMS}, got {which!r}")
    out = {}
    for name, p in unet.named_parameters():
        if which == "all":
            out[name] = p
        elif which == "attention" and (".attn1." in name or ".attn2." in name):
            out[name] = p
        elif which == "cross" and (".attn2.to_k." in name or ".attn2.to_v." in name):
            out[name] = p
    return out


class DINTR(DiffusionTracker):
    """DINTR. Build with `from_pretrained(sd_folder)` (any Stable Diffusion), `pretrained()` (the
    shipped tiny-sd model) or `tiny(seed)` (random weights); plain PyTorch until
    `fasttrack.patch(tracker)` (fasttrack.trackers.diffusion.tracker).

    Args:
        components: SDComponents (VAE, UNet, empty-prompt context, schedule).
        indication: "point", "box" or "mask": how targets are injected and read out.
        num_steps: S, interpolation steps per frame (the DDIM steps; also the number of
            timestep labels the readout averages over).
        max_timestep: UNet timestep label of the first interpolated state.
        offset: "anchor" (exact offset between the two frames' latents: x_0 = z_{k+1}) or
            "predicted" (the fine-tuned UNet as the offset psi; the readout at its x_0).
        resolution: map grid R (default: the latent size).
        cross_layers, self_layers: recorded layers (default: all of them).
        init_steps, lr: Adam steps and learning rate of the init-frame token learning.
        threshold: activation level of the window-normalized map (diffusion.readout).
        search: readout window, a multiple of the previous box; scale_step: the readout's
            largest per-frame size change (diffusion.readout).
        size_lr: weight of each frame's size measurement (1: none kept from the previous box);
            calibrate_size: learn the map-region-to-target size ratio on frame 2
            (diffusion.readout.BoxReader; not used by indication "point", whose box keeps its size).
        motion: momentum in [0, 1] of the readout's constant-velocity model (diffusion.readout.
            BoxReader; not in the paper): its prediction centres the next frame's search window
            and, with `context`, the crop (0: both centred on the previous box).
        normalize: divide S^T C by the attention each pixel receives (AttentionRecorder).
        alpha: weight of the cross map itself in the map, alpha C + (1 - alpha) S^T C (0: the
            paper's S^T C; the shipped tiny-sd setting is 1, the cross map alone: see
            tiny_sd.TRACKER_SETTINGS).
        finetune_steps, finetune_lr, finetune_params: the online in-place fine-tuning per frame
            pair (0 steps: the UNet stays as loaded; None: 1 with offset "predicted", 0 with
            "anchor", whose path does not use the fine-tuned offset).
        reinject_steps: Adam steps (learning rate `lr`) that re-fit the tokens to the frame's
            own read-out indication (0: the init tokens are kept).
        context: 0 (the paper: the UNet sees the whole frame) or >= 1: each target's UNet input
            is a square search region of side context x max(w, h) around its previous box
            (diffusion.crops): every step above runs on the crops (the fine-tuning pair is both
            frames through the new frame's window). Not with indication "mask".
    After each step: `scores` (K,), `points` (K, 2) [x, y] (indication "point") and `masks`
    (K, H, W) bool device tensor (indication "mask").
    """

    _folder = "fasttrack_dintr"
    _config_keys = ("indication", "num_steps", "max_timestep", "offset", "resolution", "cross_layers",
                    "self_layers", "init_steps", "lr", "threshold", "search", "scale_step", "size_lr", "calibrate_size",
                    "motion", "normalize", "alpha",
                    "finetune_steps", "finetune_lr", "finetune_params", "reinject_steps", "context")

    def __init__(self, components: SDComponents, *, indication: str = "box", num_steps: int = 5,
                 max_timestep: int = 250, offset: str = "anchor", resolution: int | None = None,
                 cross_layers="all", self_layers="all", init_steps: int = 20, lr: float = 5e-3,
                 threshold: float = 0.5, search: float = 3.0, scale_step: float = 1.1,
                 size_lr: float = 1.0, calibrate_size: bool = False, motion: float = 0.0,
                 normalize: bool = True, alpha: float = 0.0,
                 finetune_steps: int | None = None, finetune_lr: float = 1e-4, finetune_params: str = "attention",
                 reinject_steps: int = 1, context: float = 0.0):
        super().__init__(components, resolution=resolution, cross_layers=cross_layers,
                         self_layers=self_layers, tokens=[1])
        self.indication = check_indication(indication)
        if offset not in OFFSETS:
            raise ValueError(f"offset must be one of {OFFSETS}, got {offset!r}")
        n_train = components.alphas_cumprod.shape[0]
        if not isinstance(max_timestep, int) or not 1 <= max_timestep < n_train:
            raise ValueError(f"max_timestep must be an int in [1, {n_train}), got {max_timestep!r}")
        self._timesteps = interpolation_timesteps(num_steps, max_timestep)
        for name, v in (("init_steps", init_steps), ("finetune_steps", finetune_steps),
                        ("reinject_steps", reinject_steps)):
            if name == "finetune_steps" and v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an int >= 0, got {v!r}")
        check_readout(threshold, search, scale_step, size_lr, motion)
        if not float(finetune_lr) > 0 or not float(lr) > 0:
            raise ValueError(f"lr and finetune_lr must be > 0, got {lr!r} and {finetune_lr!r}")
        self.num_steps, self.max_timestep, self.offset = num_steps, max_timestep, offset
        self.init_steps, self.lr, self.threshold = init_steps, float(lr), float(threshold)
        self.search, self.normalize = float(search), bool(normalize)
        self.scale_step, self.size_lr, self.calibrate_size = float(scale_step), float(size_lr), bool(calibrate_size)
        self.motion = float(motion)
        if isinstance(alpha, bool) or not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        # None: what the fine-tuning is for -- one step with offset "predicted", whose path the
        # fine-tuned UNet drives; none with "anchor", where x_0 = z_{k+1} whatever the UNet.
        self.finetune_steps, self.finetune_lr = finetune_steps, float(finetune_lr)
        self._finetune_count = (finetune_steps if finetune_steps is not None
                                else int(offset == "predicted"))
        self.finetune_params, self.reinject_steps = finetune_params, reinject_steps
        self.context = check_context(context)
        if self.context and self.indication == "mask":
            raise ValueError("indication 'mask' reads whole-frame maps: use context 0 with it")
        self._tuned = _finetune_parameters(components.unet, finetune_params)
        # The loaded weights of what the fine-tuning changes, restored at every init. Kept on the
        # UNet module itself, recorded by the first DINTR built on it: a later tracker sharing
        # these components must not take already fine-tuned weights for the loaded ones.
        unet = components.unet
        loaded = unet.__dict__.setdefault("_fasttrack_loaded_weights", {})
        for n, p in self._tuned.items():
            loaded.setdefault(n, p.detach().clone())
        self._pristine = {n: loaded[n] for n in self._tuned}
        self._t = [torch.tensor(t, device=self.device) for t in self._timesteps]
        self._t_all = torch.tensor(self._timesteps, device=self.device)   # (S,), the batched labels
        self._t_batch = self._t_all
        self.tokens = None
        self.points = self.masks = None
        self._init_masks = None
        self.finetune_losses = []
        self._masters = None

    @classmethod
    def _tiny_setup(cls, path, seed):
        write_tracker_folder(path, cls._folder, _TINY_SETTINGS, {})

    @classmethod
    def pretrained(cls, *, device="cpu", dtype=torch.float32, **settings):
        """DINTR on the shipped tiny-sd model (fasttrack.trackers.diffusion.tiny_sd: trained here
        on synthetic scenes, not Stable Diffusion) with its saved tracker settings."""
        from ..diffusion.tiny_sd import shipped_folder

        return cls.from_pretrained(shipped_folder(), device=device, dtype=dtype, **settings)

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

    # ------------------------------------------------------------------ pieces of a step
    def _upload(self, image) -> torch.Tensor:
        """The frame (H, W, 3) uint8 on the device: a frame's one upload (a tensor already there
        stays as it is)."""
        if isinstance(image, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        return image.to(self.device)

    def _encode(self, frame, windows=None) -> torch.Tensor:
        """Latents of the whole frame (1, 4, h, w), or of the K crop windows (K, 4, h, w).
        frame: (H, W, 3) uint8, best already on the device (`_upload`); windows: host (K, 3)."""
        with torch.no_grad():
            if windows is None:
                return self.sd.encode(preprocess(frame, self.sd.image_size, self.device, self.dtype))
            return self.sd.encode(crop_images(frame, windows, self.sd.image_size, self.device, self.dtype))

    def _host_windows(self):
        """This frame's crop windows (K, 3) float32 ndarray, from the host copy of the boxes the
        last frame predicted (`_host_extra`: read back with its results, or the init boxes);
        None: whole frame. The same numbers as `_device_windows` (crops.crop_windows)."""
        return crop_windows(self._host_extra, self.context) if self.context else None

    def _device_windows(self):
        """This frame's crop windows (K, 3) on the device, for the readout (None: whole frame)."""
        return crop_windows(self._reader.predicted, self.context) if self.context else None

    def _read_back(self):
        """The boxes (K, 4) the next frame's crops are centred on, read back with this frame's
        results (the next frame's crop geometry is host arithmetic)."""
        return self._reader.predicted if self.context else None

    def _context(self, tokens: torch.Tensor) -> torch.Tensor:
        return insert_prompt(self.sd.null_context, tokens.to(self.dtype))

    def _maps(self, z: torch.Tensor, tokens: torch.Tensor, labels=None) -> torch.Tensor:
        """The targets' maps (K, R, R) at latents z (1 or K, 4, h, w): the UNet at z with the
        tokens (K, P, D) at every timestep label (default: all S; else a list of 0-d label
        tensors), all labels in one call of batch G K (label-major), the self and cross maps
        averaged over layers and labels before their product (MapReader.harmonized's groups):
        the maps of one call per label, recorded together."""
        K = tokens.shape[0]
        if labels is None:
            G = len(self._t)
            t = self._t_batch if self._t_batch.shape[0] == G * K else self._t_all.repeat_interleave(K)
        elif len(labels) == 1:
            G, t = 1, labels[0]
        else:
            G, t = len(labels), torch.stack(list(labels)).repeat_interleave(K)
        x = z.expand(K, -1, -1, -1)
        ctx = self._context(tokens)
        if G > 1:
            x, ctx = x.repeat(G, 1, 1, 1), ctx.repeat(G, 1, 1)
        with self.reader.start():
            self.sd.unet(x, t, encoder_hidden_states=ctx)
        return self.reader.harmonized(self.alpha, self.normalize, groups=G)

    def _fit_tokens(self, tokens: torch.Tensor, z: torch.Tensor, gt: torch.Tensor, steps: int):
        """Adam on the tokens so that their maps at z match gt (K, R, R); one timestep label
        per step, cycling. Returns (tokens, losses (steps, K))."""
        S = len(self._t)

        def loss_fn(tok, step):
            return normalized_mse(self._maps(z, tok, [self._t[step % S]]), gt)

        return learn_prompt(tokens, loss_fn, steps, self.lr)

    def _indicator(self, boxes, masks=None, windows=None) -> torch.Tensor:
        """Indicator maps (K, R, R) of boxes (K, 4) in image pixels, on the whole frame or on
        each target's window."""
        if windows is None:
            return indicator_maps(self.indication, boxes, self._image_size, (self.resolution,) * 2, masks)
        side = window_side((self.resolution,) * 2)
        return indicator_maps(self.indication, to_window(boxes, windows, side), (side, side),
                              (self.resolution,) * 2)

    def _finetune(self, z_cur: torch.Tensor, z_next: torch.Tensor) -> None:
        """`finetune_steps` Adam steps of Eq. 7 on the pair (z_k, z_{k+1}), in place."""
        if not self._finetune_count or not self._tuned:
            return
        K = self.tokens.shape[0]
        ctx = self._context(self.tokens).detach()
        S = len(self._t)
        params = list(self._tuned.values())
        for p in params:
            p.requires_grad_(True)
        try:
            for i in range(self._finetune_count):
                s = i % S
                x_t = blend(z_cur, z_next, S - s, S).expand(K, -1, -1, -1)
                self._opt.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    pred = self.sd.unet(x_t, self._t[s], encoder_hidden_states=ctx).sample
                    loss = offset_loss(pred.float(), z_cur.float(), z_next.float()).sum()
                    loss.backward()
                if self._masters is not None:
                    for p, m in zip(params, self._masters):
                        m.grad = None if p.grad is None else p.grad.float()
                        p.grad = None          # the next step's backward starts from zero
                self._opt.step()
                if self._masters is not None:
                    with torch.no_grad():
                        for p, m in zip(params, self._masters):
                            p.copy_(m)
                self.finetune_losses.append(loss.detach())
                del self.finetune_losses[:-_KEEP_LOSSES]
        finally:
            for p in params:
                p.requires_grad_(False)
                p.grad = None
            self._opt.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ tracker hooks
    def _start(self, image, boxes) -> None:
        H, W = int(image.shape[0]), int(image.shape[1])
        self._image_size = (H, W)
        K = boxes.shape[0]
        b = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        # the init boxes are host data: the first frame's windows come from them on both sides
        self._host_extra = np.asarray(boxes, dtype=np.float32)
        self._t_batch = self._t_all.repeat_interleave(K)
        with torch.no_grad():
            for n, p in self._tuned.items():
                p.copy_(self._pristine[n])
        # Half-precision models: Adam steps float32 master copies (its eps and second moments
        # underflow in float16), copied back into the UNet after each step. No fine-tuning: no
        # optimizer, no master copies.
        tuned = list(self._tuned.values()) if self._finetune_count else []
        half = bool(tuned) and tuned[0].dtype != torch.float32
        self._masters = [p.detach().float().clone() for p in tuned] if half else None
        # HostStepAdam: torch.optim.Adam's update without its per-step host reads
        self._opt = (HostStepAdam(self._masters if half else tuned, lr=self.finetune_lr)
                     if tuned else None)
        self.finetune_losses = []
        frame = self._upload(image)
        windows = crop_windows(b, self.context) if self.context else None
        z = self._encode(frame, self._host_windows())
        masks = None if self._init_masks is None else self._init_masks.to(self.device)
        gt = self._indicator(b, masks, windows)
        self._gt = gt
        self.tokens, self.loss_history = self._fit_tokens(initial_prompt(self.sd.null_context, K, 1, self.sd.prompt_init),
                                                          z, gt, self.init_steps)
        self._z, self._frame = z, frame
        self._st = self._graph = None
        self._reader = BoxReader(self.threshold, self.search, self.scale_step, self.size_lr,
                                 self.calibrate_size, self.motion)
        self._reader.start(b)
        self.points = b[:, :2] + b[:, 2:] / 2
        self.masks = None

    def _graph_frame(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`_step` of `_capturable` settings: the model input into a fixed buffer, then the
        graph runner's step."""
        host_windows = self._host_windows()
        with torch.no_grad():
            x = (preprocess(frame, self.sd.image_size, self.device, self.dtype) if host_windows is None
                 else crop_images(frame, host_windows, self.sd.image_size, self.device, self.dtype))
        st = self._st
        if st is None or st["input"].shape != x.shape or st["input"].dtype != x.dtype:
            st = self._st = {"input": torch.empty_like(x),
                             "result": torch.zeros(self.tokens.shape[0], 5, device=self.device)}
            self._graph = None
        st["input"].copy_(x)
        key = (self.patched, self.precision, self.dtype, str(self.device), self.tokens.data_ptr(),
               tuple(x.shape))
        if self._graph is None or self._graph.key != key:
            r = self._reader
            state = [st["result"], r.boxes, r.velocity, r._ratio, r._calibrated]
            self._graph = StepGraph(self._frame_step, state, key, use_graph=self.use_graph)
        self._graph()
        self._frame, self._z = frame, None      # latents stay inside the step (re-encoded if needed)
        self.points = self.masks = None
        return st["result"][:, :4], st["result"][:, 4]

    def _frame_step(self) -> None:
        """The captured part of a `_capturable` frame: reads the input buffer, the tokens and the
        readout state; writes the (K, 5) result row and the readout state in place."""
        st = self._st
        with torch.no_grad():
            z = self.sd.encode(st["input"])
            maps = self._maps(z, self.tokens)
            out = extract(self.indication, self._reader, maps, self._image_size, self._device_windows())
            st["result"].copy_(torch.cat([out["boxes"], out["scores"][:, None]], 1))

    def _capturable(self) -> bool:
        """Whether this frame's work after the model input is a fixed-shape device step that
        the graph runner can capture: no fine-tuning and no re-injection (their Adam takes host
        scalars), offset "anchor", indication "box" (the shipped settings)."""
        return (not self._finetune_count and not self.reinject_steps and self.offset == "anchor"
                and self.indication == "box")

    def _step(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame, all on the device: boxes (K, 4) and scores (K,) as device tensors. Its only
        upload is the frame; no host read (the crop geometry comes from the host copy of the
        last frame's predicted boxes, `_host_windows`). With `_capturable` settings, the model
        input (the crops, whose antialiasing sizes follow the target: eager) goes into a fixed
        buffer and the rest -- VAE, the batched label evaluations, readout -- runs through the
        shared graph runner (fasttrack.trackers.graph; a CUDA graph on a GPU, unverified there)."""
        frame = self._upload(image)
        if self._capturable():
            return self._graph_frame(frame)
        host_windows = self._host_windows()
        windows = self._device_windows()
        z_next = self._encode(frame, host_windows)
        if (host_windows is not None or self._z is None) and (
                self._finetune_count or self.offset == "predicted"):
            # the pair's first frame (kept on the device) seen through this frame's windows
            self._z = self._encode(self._frame, host_windows)
        self._finetune(self._z, z_next)
        x0 = z_next
        if self.offset == "predicted":
            ctx = self._context(self.tokens)

            def step_fn(x, s, _ts):
                return self.sd.unet(x, self._t[s], encoder_hidden_states=ctx).sample

            K = self.tokens.shape[0]
            with torch.no_grad():
                for x0 in interpolate(self._z.expand(K, -1, -1, -1), z_next.expand(K, -1, -1, -1),
                                      self.num_steps, step_fn, mode="predicted",
                                      max_timestep=self.max_timestep):
                    pass
        with torch.no_grad():
            maps = self._maps(x0, self.tokens)
            out = extract(self.indication, self._reader, maps, self._image_size, windows)
        if self.reinject_steps:
            masks = out["masks"].to(torch.float32) if self.indication == "mask" else None
            gt = self._indicator(out["boxes"], masks, windows)
            if windows is None:
                # A target with nothing read keeps its last indicator (an empty mask would
                # erase it; a kept box gives its own indicator again).
                gt = torch.where(out["found"][:, None, None], gt, self._gt)
            self.tokens, _ = self._fit_tokens(self.tokens, z_next, gt, self.reinject_steps)
            self._gt = gt
        self._z, self._frame = z_next, frame
        self.points = out.get("points")
        self.masks = out.get("masks")
        return out["boxes"], out["scores"]
