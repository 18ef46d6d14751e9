"""`train_tiny_sd`: train the tiny-sd latent diffusion model (behind `fasttrack train tiny-sd`).

Data: frames of the synthetic "train" split (`synthetic_split("train", scenes, frames)`, never
the held-out "val" / "test" the trackers are judged on), squared to 64 x 64 as the trackers see
them (fasttrack.trackers.diffusion.sd.preprocess), each with its sequence's description.

Two phases in one time budget (`minutes`, a fraction `vae_share` for the first):
1. the VAE alone: L1 + MSE reconstruction + 1e-6 KL (Stable Diffusion's KL weight; no
   perceptual or adversarial term at this scale), AdamW;
2. the latents of every frame (posterior means) are computed once and scaled to unit standard
   deviation (the VAE's `scaling_factor`, as SD's 0.18215); then the UNet and the text encoder
   train together on the epsilon loss ||eps - eps_theta(z_t, t, text)||^2, t uniform over SD's
   1000-step scaled-linear schedule, 10 % of the descriptions dropped to "" (the null context
   the trackers build their prompts on). AdamW, linear warm-up then cosine decay, gradients
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
    frames: int = 8
    batch_size: int = 16
    lr: float = 1e-3
    warmup_steps: int = 100
    text_drop: float = 0.1
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


def _images(opts: TinySDOptions, size: int):
    """(N, 3, size, size) float32 in [-1, 1] and the N descriptions."""
    from ..data.synthetic import synthetic_split
    from ..trackers.diffusion.sd import preprocess

    imgs, texts = [], []
    for seq in synthetic_split("train", num=opts.scenes, num_frames=opts.frames):
        for f in seq.frames:
            imgs.append(preprocess(f, size, "cpu", torch.float32)[0])
            texts.append(seq.text)
    return torch.stack(imgs), texts


def _lr(step: int, total_est: float, opts: TinySDOptions) -> float:
    if step < opts.warmup_steps:
        return (step + 1) / opts.warmup_steps
    frac = min(1.0, step / max(total_est, 1.0))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))


def train_tiny_sd(opts: TinySDOptions) -> dict:
    """Train tiny-sd and write it to `opts.out`; returns the run's log (also out/train.json)."""
    from diffusers import DDPMScheduler
    from tqdm.auto import tqdm

    from ..trackers.diffusion.sd import _SD_SCHEDULE, save_null_context
    from ..trackers.diffusion.tiny_sd import (TINY_SD_TEXT, TINY_SD_VAE, WordTokenizer,
                                              save_text_encoder, tiny_sd_modules)

    opts.check()
    start = time.perf_counter()
    budget = opts.minutes * 60
    dev = torch.device(opts.device)
    gen = torch.Generator().manual_seed(opts.seed)
    tok = WordTokenizer(scene_words(), TINY_SD_TEXT["length"])
    vae, unet, text = tiny_sd_modules(tok.vocab_size, opts.seed)
    vae, unet, text = vae.to(dev), unet.to(dev), text.to(dev)
    images, texts = _images(opts, TINY_SD_VAE["sample_size"])
    ids = tok(texts)
    N = images.shape[0]
    log = {"options": asdict(opts), "images": N, "vocab": tok.words}

    # ---- phase 1: the autoencoder
    opt = torch.optim.AdamW(vae.parameters(), lr=opts.lr, weight_decay=0.0)
    vae_end = start + budget * opts.vae_share
    losses, step = [], 0
    bar = tqdm(desc="tiny-sd vae", disable=not opts.progress, unit="step")
    while time.perf_counter() < vae_end:
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
    losses, step, t_phase = [], 0, time.perf_counter()
    bar = tqdm(desc="tiny-sd unet", disable=not opts.progress, unit="step")
    total_est = 1e9
    while time.perf_counter() < start + budget:
        if step == 20:   # the cosine's length, from the measured step time
            per = (time.perf_counter() - t_phase) / 20
            total_est = (start + budget - t_phase) / per
        for g in opt.param_groups:
            g["lr"] = opts.lr * _lr(step, total_est, opts)
        idx = torch.randint(N, (opts.batch_size,), generator=gen)
        z0 = lat[idx]
        tid = ids[idx].clone()
        tid[torch.rand(opts.batch_size, generator=gen) < opts.text_drop] = empty
        t = torch.randint(0, acp.shape[0], (opts.batch_size,), generator=gen).to(dev)
        eps = torch.randn(z0.shape, generator=gen).to(dev)
        a = acp[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        pred = unet(zt, t, encoder_hidden_states=text(tid.to(dev))).sample
        loss = F.mse_loss(pred, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    bar.close()
    log["unet"] = {"steps": step, "loss_first50": float(np.mean(losses[:50])),
                   "loss_last200": float(np.mean(losses[-200:]))}
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
    log["unet_losses"] = [float(np.mean(losses[i:i + 50])) for i in range(0, len(losses), 50)]
    with open(os.path.join(out, "train.json"), "w") as f:
        json.dump(log, f, indent=1)
    return log
