"""Diff-Tracker (Zhang et al., ECCV 2024, arXiv 2407.08394; DESIGN 1.5) on fasttrack.

Per frame: image -> square S x S input -> VAE latents z -> z_t = sqrt(abar) z + sqrt(1 - abar) eps
(seeded generator) -> UNet(z_t, t, context with the prompt) with maps recorded -> attention
harmonization M = alpha C + (1 - alpha) S^T C at R x R (alpha 0.5) from the chosen layers
(default SLiMe's: cross maps of up_blocks 1-2, self maps of up_blocks 3, i.e. 16/32 and 64 for
SD 2.1; with `normalize`, S^T C divided by the attention each pixel receives) -> the diffusion
trackers' readout (diffusion.readout: the connected region holding the map's peak within
`search` times the previous box, on the window-normalized map, its pixels at or above
`threshold`, and the smallest box around them; then the size model of `BoxReader`: with
`calibrate_size`, the region-to-target size ratio learned on frame 2, sizes bounded by
`scale_step` and smoothed by `size_lr`). `score` is the readout's peak score.

Frame 1: the prompt (P tokens, D = prompt dim) is learned with Adam (lr 5e-3) on
normalized MSE(M, box mask) + dm_weight * L_DM (the UNet's denoising loss), the UNet frozen.
From the frame of 0-based index `update_from` (5: the 6th frame) on, the online prompt updater
(updater.py) moves the prompt with short- and long-term motion; `train_updater` trains it (Adam,
lr 5e-4). Without saved updater weights the updater starts as the identity (see updater.py),
and then a frame skips it (its output would be the prompt itself).

A frame is one upload of the image into a fixed buffer, then VAE, noise, UNet, maps and readout
as one step through the shared graph runner (fasttrack.trackers.graph: a CUDA graph replay on a
GPU -- not yet run there, unverified --, the same step eagerly on the CPU), then one read of the
(K, 5) boxes and scores. The updater, when it runs, moves the fixed prompt in place before it.

Many targets run as batch rows of one UNet pass (`init_batch` / `update_batch`), sharing the
frame's latents and noise, so K targets give the boxes of K single runs.
"""
from __future__ import annotations

import torch

from ..diffusion.boxes import box_masks
from ..diffusion.readout import BoxReader, check_readout
from ..diffusion.prompt_learning import initial_prompt, insert_prompt, normalized_mse
from ..diffusion.prompt_learning import learn_prompt as adam_prompt
from ..diffusion.sd import SDComponents, add_noise, diffusion_target, preprocess
from ..diffusion.serialization import load_module_state, write_tracker_folder
from ..diffusion.tracker import DiffusionTracker
from ..graph import StepGraph
from .updater import PromptUpdater, UpdaterConfig, crop_boxes, updater_config_for

__all__ = ["DiffTracker"]

SLIME_CROSS = ("up_blocks.1.*", "up_blocks.2.*")
SLIME_SELF = ("up_blocks.3.*",)

# The `tiny` tracker: updater sized for 128 px frames and prompt dim 32, 3 prompt-learning steps.
_TINY_SETTINGS = dict(prompt_steps=3)


class DiffTracker(DiffusionTracker):
    """Diff-Tracker. Build with `from_pretrained(sd_folder)` or `tiny(seed)`; plain PyTorch
    until `fasttrack.patch(tracker)` (fasttrack.trackers.diffusion.tracker).

    Args:
        components: SDComponents (VAE, UNet, empty-prompt context, schedule).
        updater: PromptUpdater or None (None: a fresh, identity-initialized one is built).
        resolution: map grid R (default: the latent size, 64 for SD 2.1 at 512 px).
        cross_layers, self_layers: recorded layers (default SLiMe's choice).
        alpha: harmonization weight of the cross map (0.5).
        timestep: noise level t of every forward (100 of 1000 by default: light noise, so the
            maps follow the image; the paper does not give its value).
        num_tokens: P, learnable prompt tokens (1).
        prompt_steps: Adam steps of the first-frame prompt learning; lr: its learning rate.
        dm_weight: weight of L_DM in the first-frame loss.
        threshold: activation level of the window-normalized map (diffusion.readout).
        search: readout window, a multiple of the previous box; scale_step: the readout's
            largest per-frame size change (diffusion.readout).
        size_lr: weight of each frame's size measurement (1: none kept from the previous box);
            calibrate_size: learn the map-region-to-target size ratio on frame 2
            (diffusion.readout.BoxReader).
        motion: momentum in [0, 1] of the readout's constant-velocity model, whose prediction
            centres the search window (diffusion.readout.BoxReader; 0: the window is centred on
            the previous box).
        normalize: divide S^T C by the attention each pixel receives (AttentionRecorder).
        use_updater: run the online prompt updater; update_from: 0-based frame index of its
            first update (5: the 6th frame).
        seed: seeds the noise generator (same seed, same boxes, patched or not).
    """

    _config_keys = ("resolution", "cross_layers", "self_layers", "alpha", "timestep", "num_tokens",
                    "prompt_steps", "lr", "dm_weight", "threshold", "search", "scale_step", "size_lr", "calibrate_size", "motion",
                    "normalize", "use_updater", "update_from", "seed")
    _folder = "fasttrack_diff_tracker"

    def __init__(self, components: SDComponents, *, updater: PromptUpdater | None = None,
                 resolution: int | None = None,
                 cross_layers=SLIME_CROSS, self_layers=SLIME_SELF, alpha: float = 0.5,
                 timestep: int = 100, num_tokens: int = 1, prompt_steps: int = 50, lr: float = 5e-3,
                 dm_weight: float = 1.0, threshold: float = 0.5, search: float = 3.0,
                 scale_step: float = 1.1, size_lr: float = 1.0, calibrate_size: bool = False,
                 motion: float = 0.0, normalize: bool = True, use_updater: bool = True,
                 update_from: int = 5, seed: int = 0):
        super().__init__(components, resolution=resolution, cross_layers=cross_layers,
                         self_layers=self_layers, tokens=range(1, 1 + int(num_tokens)))
        n_train = components.alphas_cumprod.shape[0]
        if not isinstance(timestep, int) or not 0 <= timestep < n_train:
            raise ValueError(f"timestep must be an int in [0, {n_train}), got {timestep!r}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        check_readout(threshold, search, scale_step, size_lr, motion)
        if not isinstance(update_from, int) or update_from < 1:
            raise ValueError(f"update_from must be an int >= 1, got {update_from!r}")
        self.alpha, self.timestep, self.num_tokens = float(alpha), timestep, int(num_tokens)
        self.prompt_steps, self.lr, self.dm_weight = int(prompt_steps), float(lr), float(dm_weight)
        self.search, self.normalize = float(search), bool(normalize)
        self.scale_step, self.size_lr, self.calibrate_size = float(scale_step), float(size_lr), bool(calibrate_size)
        self.motion = float(motion)
        self.threshold, self.use_updater, self.update_from = float(threshold), bool(use_updater), update_from
        self.seed = int(seed)
        D = int(components.unet.config.cross_attention_dim)
        if updater is None:
            updater = PromptUpdater(updater_config_for(D, self.num_tokens))
        if updater.config["prompt_dim"] != D or updater.config["num_tokens"] != self.num_tokens:
            raise ValueError(f"updater is built for prompts ({updater.config['num_tokens']}, "
                             f"{updater.config['prompt_dim']}), the model needs ({self.num_tokens}, {D})")
        self.updater = updater.to(self.device).eval().requires_grad_(False)
        self._t = torch.tensor(timestep, device=self.device)
        self.prompt = None
        self.loss_history = None
        self._updater_opt_state = None   # Adam state of the last train_updater call

    @classmethod
    def pretrained(cls, *, device="cpu", dtype=torch.float32, **settings):
        """Diff-Tracker on the shipped tiny-sd model (fasttrack.trackers.diffusion.tiny_sd:
        trained here on synthetic scenes, not Stable Diffusion), with its shipped trained
        updater and tracker settings."""
        from ..diffusion.tiny_sd import shipped_folder

        return cls.from_pretrained(shipped_folder(), device=device, dtype=dtype, **settings)

    # ------------------------------------------------------------------ serialization hooks
    def _modules_to_save(self) -> dict:
        return {"updater": self.updater}

    @classmethod
    def _build(cls, components, settings, module_configs, sub):
        updater = None
        if "updater" in module_configs:
            updater = PromptUpdater(UpdaterConfig(**module_configs["updater"]))
            load_module_state(updater, sub, "updater")
        return cls(components, updater=updater, **settings)

    @classmethod
    def _tiny_setup(cls, path, seed):
        torch.manual_seed(seed)
        updater = PromptUpdater(updater_config_for(32, 1))
        # Random weights everywhere, the zero-started last layers included, so that the tiny
        # tracker's updater really moves the prompt (a trained one would).
        with torch.no_grad():
            for last in (updater.fusion[-1], updater.blend[-1]):
                last.weight.normal_(0.0, 0.05)
        write_tracker_folder(path, cls._folder, _TINY_SETTINGS, {"updater": updater})

    # ------------------------------------------------------------------ one frame
    def _encode(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        """image -> model input x (1, 3, S, S) in [-1, 1] and latents z (1, 4, S/8, S/8)."""
        with torch.no_grad():
            x = preprocess(image, self.sd.image_size, self.device, self.dtype)
            return x, self.sd.encode(x)

    def _forward(self, z: torch.Tensor, prompt: torch.Tensor):
        """Noise z, run the UNet with the prompts (K, P, D), read the harmonized maps.
        Returns maps (K, R, R) float32, the UNet output (K, 4, h, w) and the noise (1, 4, h, w)."""
        K = prompt.shape[0]
        noise = torch.randn(z.shape, generator=self._gen, device=self.device, dtype=self.dtype)
        zt = add_noise(z, noise, self.timestep, self.sd.alphas_cumprod).expand(K, -1, -1, -1)
        ctx = insert_prompt(self.sd.null_context, prompt.to(self.dtype))
        pred = self.reader.run(zt, self._t, ctx)
        return self.reader.harmonized(self.alpha, self.normalize), pred, noise

    def _image_boxes_to_input(self, boxes: torch.Tensor) -> torch.Tensor:
        H, W = self._image_size
        s = self.sd.image_size
        return boxes * boxes.new_tensor([s / W, s / H, s / W, s / H])

    # ------------------------------------------------------------------ tracker hooks
    def _start(self, image, boxes) -> None:
        H, W = int(image.shape[0]), int(image.shape[1])
        self._image_size = (H, W)
        self._gen = torch.Generator(device=self.device).manual_seed(self.seed)
        K = boxes.shape[0]
        b = torch.as_tensor(boxes, dtype=torch.float32, device=self.device)
        x, z = self._encode(image)
        gt = box_masks(b, (H, W), (self.resolution, self.resolution))
        self.prompt, self.loss_history = self.learn_prompt(z, gt, self.prompt_steps)
        self._reader = BoxReader(self.threshold, self.search, self.scale_step, self.size_lr,
                                 self.calibrate_size, self.motion)
        self._reader.start(b)
        self._frame = 0
        self._st = self._graph = None
        self._short, self._long = [], []
        # An identity updater (untrained: no saved weights) returns the prompt bit for bit:
        # its two ResNet18 passes and attention per frame are skipped, same boxes.
        self._run_updater = self.use_updater and not self.updater.is_identity()
        if self.use_updater:
            with torch.no_grad():
                crops = crop_boxes(x, self._image_boxes_to_input(b), self.updater.config["template_size"])
                self._template = self.updater.template_tokens(self.updater.prepare(crops, crops.shape[-1]))
                self._push_features(x)

    def learn_prompt(self, z: torch.Tensor, gt: torch.Tensor, steps: int):
        """First-frame prompt learning on latents z (1, 4, h, w) towards ground-truth maps
        gt (K, R, R). Returns the prompts (K, P, D) and the per-step losses (steps, K)."""
        t = self.timestep

        def loss_fn(p, step):
            maps, pred, noise = self._forward(z, p)
            target = diffusion_target(z, noise, t, self.sd.alphas_cumprod, self.sd.prediction_type)
            l_dm = (pred.float() - target.float()).pow(2).flatten(1).mean(1)
            return normalized_mse(maps, gt) + self.dm_weight * l_dm

        p0 = initial_prompt(self.sd.null_context, gt.shape[0], self.num_tokens, self.sd.prompt_init)
        return adam_prompt(p0, loss_fn, steps, self.lr)

    def _push_features(self, x: torch.Tensor) -> None:
        """Backbone features of this frame for both motion encoders (kept for later frames)."""
        cfg = self.updater.config
        frame = self.updater.prepare(x, cfg["frame_size"])
        self._short = (self._short + [self.updater.short.features(frame)])[-2:]
        self._long = (self._long + [self.updater.long.features(frame)])[-(cfg["history"] + 1):]

    def _motion_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked features (1, 2, C, h, w) and (1, T + 1, C, h, w), oldest first; missing early
        frames repeat the oldest one."""
        n_long = self.updater.config["history"] + 1
        short = [self._short[0]] * (2 - len(self._short)) + self._short
        long = [self._long[0]] * (n_long - len(self._long)) + self._long
        return torch.stack(short, 1), torch.stack(long, 1)

    def _step(self, image) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame, all on the device: boxes (K, 4) and scores (K,) as device tensors.

        The frame is uploaded into a fixed buffer; the updater (when it runs: its frame history
        is Python state) moves the fixed prompt in place; then `_frame_step` -- VAE, noise, UNet,
        maps, readout -- runs through the shared graph runner (fasttrack.trackers.graph): one
        CUDA graph replay per frame on a GPU, the same step eagerly on the CPU."""
        st = self._st
        if st is None or st["frame"].shape != tuple(image.shape):
            st = self._st = {"frame": torch.empty(tuple(image.shape), dtype=torch.uint8, device=self.device),
                             "result": torch.zeros(self.prompt.shape[0], 5, device=self.device)}
            self._graph = None
        frame = torch.from_numpy(image) if not isinstance(image, torch.Tensor) else image
        st["frame"].copy_(frame, non_blocking=True)       # the frame's one upload
        self._frame += 1
        if self._run_updater:
            with torch.no_grad():
                x = preprocess(st["frame"], self.sd.image_size, self.device, self.dtype)
                self._push_features(x)
                if self._frame >= self.update_from:
                    short, long = self._motion_inputs()
                    self.prompt.copy_(self.updater(self.prompt, self._template, short, long))
        key = (self.patched, self.precision, self.dtype, str(self.device), self.prompt.data_ptr())
        if self._graph is None or self._graph.key != key:
            r = self._reader
            state = [st["result"], r.boxes, r.velocity, r._ratio, r._calibrated]
            self._graph = StepGraph(self._frame_step, state, key, use_graph=self.use_graph,
                                    generators=[self._gen] if self._gen.device.type == "cuda" else [])
        with torch.no_grad():
            self._graph()
        return st["result"][:, :4], st["result"][:, 4]

    def _frame_step(self) -> None:
        """The captured part of a frame: reads the frame buffer and the prompt, writes the
        (K, 5) result row and the readout state in place."""
        st = self._st
        x = preprocess(st["frame"], self.sd.image_size, self.device, self.dtype)
        maps, _, _ = self._forward(self.sd.encode(x), self.prompt)
        boxes, scores = self._boxes_from_maps(maps)
        st["result"].copy_(torch.cat([boxes, scores[:, None]], 1))

    def _boxes_from_maps(self, maps: torch.Tensor):
        r = self._reader.read(maps, self._image_size)
        return r.boxes, r.scores

    # ------------------------------------------------------------------ updater training
    def train_updater(self, sequences, *, epochs: int = 1, lr: float = 5e-4, prompt_steps: int | None = None,
                      max_frames: int | None = None, progress: bool = True,
                      optimizer_state: dict | None = None) -> list[float]:
        """Train the online prompt updater (Adam, lr 5e-4) on sequences with boxes.

        For each sequence: learn the first-frame prompt, then from frame `update_from` on update
        the prompt with the updater and minimize normalized MSE(harmonized map, box mask of the
        frame's ground truth); the prompt carried to the next frame is detached (truncated
        backpropagation through time, one frame long).

        Args:
            sequences: iterable of fasttrack Sequence objects or (frames, boxes (N, 4)) pairs.
            epochs: passes over the sequences; prompt_steps: first-frame steps (default: the
            tracker's); max_frames: frames used per sequence (None: all);
            optimizer_state: an Adam state to continue from (the previous call's is kept in
            `_updater_opt_state`).
        Returns:
            the mean loss of every trained frame, in order.
        """
        from tqdm.auto import tqdm

        from ..base import as_image, check_boxes

        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be an int >= 1, got {epochs!r}")
        seqs = [(s.frames if hasattr(s, "gt") else s[0], s.gt if hasattr(s, "gt") else s[1]) for s in sequences]
        if not seqs:
            raise ValueError("sequences must hold at least one sequence")
        was = self.use_updater
        self.use_updater = True
        self.updater.requires_grad_(True).train()
        opt = torch.optim.Adam(self.updater.parameters(), lr=lr)
        if optimizer_state is not None:
            opt.load_state_dict(optimizer_state)
            for g in opt.param_groups:
                g["lr"] = lr
        steps = self.prompt_steps if prompt_steps is None else int(prompt_steps)
        losses = []
        try:
            for _ in range(epochs):
                for frames, gts in tqdm(seqs, disable=not progress, desc="train_updater"):
                    n = len(frames) if max_frames is None else min(len(frames), max_frames)
                    first, size = as_image(frames[0], "frames[0]")
                    b0 = check_boxes(gts[0], size, "boxes[0]")
                    saved, self.prompt_steps = self.prompt_steps, steps
                    try:
                        self._start(first, b0[None])
                    finally:
                        self.prompt_steps = saved
                    for k in range(1, n):
                        image, _ = as_image(frames[k], f"frames[{k}]")
                        losses += self._train_frame(opt, image, gts[k])
        finally:
            self.updater.requires_grad_(False).eval()
            self.use_updater = was
            self._updater_opt_state = opt.state_dict()
        return losses

    def _train_frame(self, opt, image, box) -> list[float]:
        x, z = self._encode(image)
        self._frame += 1
        with torch.no_grad():
            self._push_features(x)
        if self._frame < self.update_from:
            return []
        short, long = self._motion_inputs()
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            prompt = self.updater(self.prompt, self._template, short, long)
            maps, _, _ = self._forward(z, prompt)
            b = torch.as_tensor(box, dtype=torch.float32, device=self.device)[None]
            gt = box_masks(b, self._image_size, (self.resolution, self.resolution))
            loss = normalized_mse(maps, gt).sum()
            loss.backward()
        opt.step()
        self.prompt = prompt.detach()
        return [float(loss.detach())]
