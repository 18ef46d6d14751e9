"""`train_tiny_sd`: train the tiny-sd latent diffusion model (behind `fasttrack train tiny-sd`).

Data: frames of the synthetic "train" split (`synthetic_split("train", scenes, frames)`, never
the held-out "val" / "test" the trackers are judged on), and with "photos" in `data` half of
the scenes from the photo "train" split instead (photographed objects over photographs,
fasttrack.data.photo_sequences: the maps must mean something on real images), squared to
64 x 64 as the trackers see them (fasttrack.trackers.diffusion.sd.preprocess), each with its
sequence's description.

Two phases in one time budget (`minutes`, a fraction `vae_share` for the first):
1. the VAE alone: L1 + MSE reconstruction + 1e-6 KL (Stable Diffusion's KL weight; no
   perceptual or adversarial term at this scale), AdamW;
2. the latents of every frame (posterior means) are computed once and scaled to unit standard
   deviation (the VAE's `scaling_factor`, as SD's 0.18215); then the UNet and the text encoder
   train together on the epsilon loss ||eps - eps_theta(z_t, t, text)||^2, t uniform over SD's
   1000-step scaled-linear schedule, 10 % of the descriptions dropped to "" (the null context
   the trackers build their prompts on), plus a grounding loss on the cross-attention maps
   (TokenCompose's token loss, Wang et al., CVPR 2024): for every word of the description that
   names an attribute of the target (colour, size, shape, noun), 1 - the share of its head-mean
   cross-attention (all layers, resized to 32 x 32) inside the target's box, weight
   `ground_weight`. Stable Diffusion's word maps localize objects because it saw billions of
   captioned images; trained 30 CPU minutes on the epsilon loss alone, tiny-sd's do not (word
   maps measured 0.7-1.5 times as strong inside the box as outside, no better than chance), and
   the trackers read nothing but those maps. AdamW, linear warm-up then cosine decay, gradients
   clipped at norm 1.
The result is a folder in the diffusers layout (fasttrack.trackers.diffusion.tiny_sd) that
`DiffTracker.from_pretrained(out)` and `DINTR.from_pretrained(out)` load.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TinySDOptions", "train_tiny_sd", "scene_words"]


@dataclass
class TinySDOptions:
    """What a tiny-sd training run does (the CLI's options, same names)."""

    out: str = "tiny-sd"
    minutes: float = 27.0
    vae_share: float = 0.12
    scenes: int = 400
    data: tuple = ("synthetic",)
    frames: int = 8
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    text_drop: float = 0.1
    ground_weight: float = 1.0
    # TokenCompose's pixel loss (below). Off by default: measured on "val" (20 x 40 frames,
    # Diff-Tracker, 27 CPU minutes each), weight 1 lifts the learned token's map peak from
    # 1e-2 .. 1e-13 to 0.3 .. 1.0 but takes AO from 0.55 to 0.50 (fewer UNet steps in the time).
    pixel_weight: float = 0.0
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def check(self) -> None:
        if not self.minutes > 0:
            raise ValueError(f"--minutes must be > 0, got {self.minutes}")
        if not 0 < self.vae_share < 1:
            raise ValueError(f"vae_share must be in (0, 1), got {self.vae_share}")
        if self.scenes < 1 or self.frames < 2 or self.batch_size < 1:
            raise ValueError("scenes must be >= 1, frames >= 2 and --batch >= 1, got "
                             f"{self.scenes}, {self.frames}, {self.batch_size}")
        bad = [d for d in self.data if d not in ("synthetic", "photos")]
        if bad or not self.data:
            raise ValueError(f"tiny-sd --data takes 'synthetic' and / or 'photos', got {list(self.data)}")
        if not self.ground_weight >= 0:
            raise ValueError(f"ground_weight must be >= 0, got {self.ground_weight}")
        if not self.pixel_weight >= 0:
            raise ValueError(f"pixel_weight must be >= 0, got {self.pixel_weight}")
        if not self.lr > 0 or not 0 <= self.text_drop < 1:
            raise ValueError(f"--lr must be > 0 and text_drop in [0, 1), got {self.lr}, {self.text_drop}")


def scene_words() -> list[str]:
    """Every word the synthetic descriptions use (fasttrack.data.text)."""
    from ..data.text import DESCRIPTION_WORDS, NOUNS, TEMPLATES
    from ..trackers.diffusion.tiny_sd import WordTokenizer

    words = {w for vals in DESCRIPTION_WORDS.values() for w in vals} | set(NOUNS)
    for tpl in TEMPLATES:
        words |= {w for w in WordTokenizer.split(tpl.replace("{", " ").replace("}", " "))
                  if w not in ("size", "colour", "shape", "noun")}
    return sorted(words)


def _images(opts: TinySDOptions, size: int, grid: int):
    """(N, 3, size, size) float32 in [-1, 1], the N descriptions and the targets' box masks
    (N, grid, grid) on the square input (cell area fractions)."""
    from ..data.synthetic import synthetic_split
    from ..trackers.diffusion.boxes import box_masks
    from ..trackers.diffusion.sd import preprocess

    imgs, texts, masks = [], [], []
    n_photo = 0 if "photos" not in opts.data else (
        opts.scenes if "synthetic" not in opts.data else opts.scenes // 2)
    seqs = synthetic_split("train", num=opts.scenes - n_photo, num_frames=opts.frames) \
        if n_photo < opts.scenes else []
    if n_photo:
        from ..data.photo_sequences import random_photo_sequence
        from ..data.photos import PhotoLibrary

        lib = PhotoLibrary.open()
        seqs += [random_photo_sequence(np.random.default_rng([606, opts.seed, i]), lib, "train",
                                       opts.frames) for i in range(n_photo)]
    for seq in seqs:
        size_hw = seq.frames[0].shape[:2]
        masks.append(box_masks(torch.as_tensor(seq.gt, dtype=torch.float32), size_hw, (grid, grid)))
        for f in seq.frames:
            imgs.append(preprocess(f, size, "cpu", torch.float32)[0])
            texts.append(seq.text)
    return torch.stack(imgs), texts, torch.cat(masks)


def grounded_words() -> set[str]:
    """The description words that name the target (its attributes and nouns)."""
    from ..data.text import DESCRIPTION_WORDS, NOUNS

    return {w for vals in DESCRIPTION_WORDS.values() for w in vals} | set(NOUNS)


def _lr(step: int, total_est: float, opts: TinySDOptions) -> float:
    if step < opts.warmup_steps:
        return (step + 1) / opts.warmup_steps
    frac = min(1.0, step / max(total_est, 1.0))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))


def train_tiny_sd(opts: TinySDOptions) -> dict:
    """Train tiny-sd and write it to `opts.out`; returns the run's log (also out/train.json)."""
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    from ..trackers.diffusion.sd import _SD_SCHEDULE, PROMPT_INIT_FILE, save_null_context
    from ..recorder import EagerRecorder
    from ..trackers.diffusion.tiny_sd import (TINY_SD_TEXT, TINY_SD_UNET, TINY_SD_VAE,
                                              WordTokenizer, save_text_encoder, tiny_sd_modules)

    opts.check()
    start = time.perf_counter()
    budget = opts.minutes * 60
    dev = torch.device(opts.device)
    gen = torch.Generator().manual_seed(opts.seed)
    tok = WordTokenizer(scene_words(), TINY_SD_TEXT["length"])
    vae, unet, text = tiny_sd_modules(tok.vocab_size, opts.seed)
    vae, unet, text = vae.to(dev), unet.to(dev), text.to(dev)
    grid = TINY_SD_UNET["sample_size"]
    images, texts, masks = _images(opts, TINY_SD_VAE["sample_size"], grid)
    ids = tok(texts)
    ground_ids = torch.tensor(sorted(tok.index[w] for w in grounded_words()))
    grounded = torch.isin(ids, ground_ids)            # (N, L): tokens whose maps are supervised
    N = images.shape[0]
    log = {"options": asdict(opts), "images": N, "vocab": tok.words}

    # ---- phase 1: the autoencoder
    opt = torch.optim.AdamW(vae.parameters(), lr=opts.lr, weight_decay=0.0)
    vae_end = start + budget * opts.vae_share
    losses, step = [], 0
    bar = tqdm(desc="tiny-sd vae", disable=not opts.progress, unit="step")
    while step == 0 or time.perf_counter() < vae_end:     # at least one step per phase
        idx = torch.randint(N, (opts.batch_size,), generator=gen)
        x = images[idx].to(dev)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        kl = post.kl().mean() / x[0].numel()
        loss = (rec - x).abs().mean() + (rec - x).pow(2).mean() + 1e-6 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.close()
    log["vae"] = {"steps": step, "loss_first": losses[0], "loss_last20": float(np.mean(losses[-20:]))}
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        lat = torch.cat([vae.encode(images[i:i + 64].to(dev)).latent_dist.mean
                         for i in range(0, N, 64)])
        scale = float(1.0 / lat.std())
        rec = vae.decode(lat[:64]).sample
        log["vae"]["val_l1"] = float((rec - images[:64].to(dev)).abs().mean())
    vae.register_to_config(scaling_factor=scale)
    lat = lat * scale
    log["vae"]["scaling_factor"] = scale

    # ---- phase 2: UNet + text encoder on the epsilon loss
    acp = DDPMScheduler(**_SD_SCHEDULE).alphas_cumprod.to(dev)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=opts.lr, weight_decay=1e-4)
    empty = tok([""])[0]
    losses, glosses, plosses, step, t_phase = [], [], [], 0, time.perf_counter()
    # Materialized cross maps with gradients (small: N x T per head at 32 x 32, T = 16).
    rec = EagerRecorder(unet, resolution=grid, cross_layers="all", self_layers=None)
    bar = tqdm(desc="tiny-sd unet", disable=not opts.progress, unit="step")
    total_est = 1e9
    while step == 0 or time.perf_counter() < start + budget:
        if step == 20:   # the cosine's length, from the measured step time
            per = (time.perf_counter() - t_phase) / 20
            total_est = (start + budget - t_phase) / per
        for g in opt.param_groups:
            g["lr"] = opts.lr * _lr(step, total_est, opts)
        idx = torch.randint(N, (opts.batch_size,), generator=gen)
        z0 = lat[idx]
        tid = ids[idx].clone()
        drop = torch.rand(opts.batch_size, generator=gen) < opts.text_drop
        tid[drop] = empty
        sup = (grounded[idx] & ~drop[:, None]).to(dev)            # (B, L)
        t = torch.randint(0, acp.shape[0], (opts.batch_size,), generator=gen).to(dev)
        eps = torch.randn(z0.shape, generator=gen).to(dev)
        a = acp[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        rec.reset()
        with rec:
            pred = unet(zt, t, encoder_hidden_states=text(tid.to(dev))).sample
        loss = F.mse_loss(pred, eps)
        losses.append(loss.item())
        if (opts.ground_weight > 0 or opts.pixel_weight > 0) and sup.any():
            maps = rec.cross().flatten(2)                            # (B, L, grid^2)
            box = masks[idx].to(dev).flatten(1)[:, None]             # (B, 1, grid^2)
            inside = (maps * box).sum(-1) / maps.sum(-1).clamp_min(1e-12)
            gloss = (1 - inside)[sup].mean()
            # TokenCompose's pixel loss: BCE of the map itself against the box. The token loss
            # above is blind to scale, so alone it lets the start token keep ~all the attention
            # (word maps of 1e-6 .. 1e-14 that underflow once a tracker learns its token).
            p = maps.clamp(1e-7, 1 - 1e-7)
            bce = -(box * p.log() + (1 - box) * (1 - p).log()).mean(-1)
            pix = bce[sup].mean()
            loss = loss + opts.ground_weight * gloss + opts.pixel_weight * pix
            glosses.append(gloss.item())
            plosses.append(pix.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}",
                        ground=f"{np.mean(glosses[-50:]) if glosses else 0:.3f}")
    bar.close()
    log["unet"] = {"steps": step, "loss_first50": float(np.mean(losses[:50])),
                   "loss_last200": float(np.mean(losses[-200:])),
                   "ground_first50": float(np.mean(glosses[:50])) if glosses else None,
                   "ground_last200": float(np.mean(glosses[-200:])) if glosses else None,
                   "pixel_first50": float(np.mean(plosses[:50])) if plosses else None,
                   "pixel_last200": float(np.mean(plosses[-200:])) if plosses else None}
    log["minutes"] = (time.perf_counter() - start) / 60

    # ---- write the folder
    out = os.fspath(opts.out)
    os.makedirs(out, exist_ok=True)
    unet.eval()
    text.eval()
    vae.save_pretrained(os.path.join(out, "vae"))
    unet.save_pretrained(os.path.join(out, "unet"))
    DDPMScheduler(**_SD_SCHEDULE).save_pretrained(os.path.join(out, "scheduler"))
    save_text_encoder(out, text.cpu(), tok)
    with torch.no_grad():
        save_null_context(out, text(tok([""])))
        # Where the trackers' prompt tokens start: the encoder's "object" (position 1, where
        # the trackers insert their token), a word grounded on every target during training.
        from safetensors.torch import save_file

        save_file({"prompt_init": text(tok(["object"]))[:, 1:2].contiguous()},
                  os.path.join(out, PROMPT_INIT_FILE))
    # The trackers' settings for this model, so from_pretrained(out) reads it as intended.
    from ..trackers.diffusion.serialization import write_tracker_folder
    from ..trackers.diffusion.tiny_sd import TRACKER_SETTINGS

    write_tracker_folder(out, "fasttrack_diff_tracker", TRACKER_SETTINGS["DiffTracker"], {})
    write_tracker_folder(out, "fasttrack_dintr", TRACKER_SETTINGS["DINTR"], {})
    log["unet_losses"] = [float(np.mean(losses[i:i + 50])) for i in range(0, len(losses), 50)]
    with open(os.path.join(out, "train.json"), "w") as f:
        json.dump(log, f, indent=1)
    return log
