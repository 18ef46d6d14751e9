"""tiny-sd: the small text-conditioned latent diffusion model fasttrack trains and ships, so that
Diff-Tracker and DINTR can be shown to track without Stable Diffusion weights.

What it is: Stable Diffusion's recipe at toy scale, in the diffusers layout, trained on
fasttrack's synthetic scenes (`fasttrack train tiny-sd`, fasttrack.train.tiny_sd):
- vae/: an AutoencoderKL, 64 x 64 RGB -> 4 x 32 x 32 latents (factor 2), trained as an
  autoencoder (L1 + a small KL term), latents scaled by 1 / their standard deviation;
- unet/: a UNet2DConditionModel with SD's block structure at three levels (32, 16, 8) and
  linear-projection transformers: cross-attention down and up at 32 and 16, a cross-attention
  mid block at 8; epsilon prediction under SD's scaled-linear schedule (scheduler/);
- text_encoder/ + tokenizer/: a word-level encoder (embedding + positions + one transformer
  layer + LayerNorm, 32-d, 16 tokens with start / end / padding as CLIP's) trained jointly with
  the UNet on the scenes' descriptions (fasttrack.data.text), 10 % of them dropped to the empty
  prompt; `null_context.safetensors` holds its output for "".
What it is not: Stable Diffusion, or anything that knows natural images: it has seen coloured
sprites on synthetic backgrounds and a vocabulary of a few dozen words. The real path is
`DiffTracker.from_pretrained(<local SD 2.1 folder>)` (fasttrack.trackers.diffusion.sd).

The text encoder is fasttrack's own module (config.json + model.safetensors): diffusers has no
text encoder class, and the trackers never read it (they learn their prompt tokens in the
encoder's output space and only need the null context).
"""
from __future__ import annotations

import json
import os
import re

import torch
from torch import nn

__all__ = ["TINY_SD_VAE", "TINY_SD_UNET", "TINY_SD_TEXT", "TinyTextEncoder", "WordTokenizer",
           "tiny_sd_modules", "save_text_encoder", "load_text_encoder", "shipped_folder",
           "TINY_SD_DIR", "TRACKER_SETTINGS"]

TINY_SD_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                   up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32),
                   layers_per_block=1, latent_channels=4, norm_num_groups=8, sample_size=64)
# attention_head_dim is diffusers' (legacy) name for the number of heads.
TINY_SD_UNET = dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=1,
                    block_out_channels=(32, 64, 64),
                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                    attention_head_dim=(2, 4, 4), cross_attention_dim=32, norm_num_groups=8,
                    use_linear_projection=True)
TINY_SD_TEXT = dict(dim=32, length=16, heads=2, hidden=64)

# The trackers' settings on tiny-sd (written beside the model by the trainer and by
# scripts/ship_weights.py), chosen on the "val" split, 6 sequences x 30 frames (AO):
# - layers: SLiMe's choice carried over to three levels -- cross maps of the two cross-attention
#   up levels (16 and 32), self maps of the top one (32); DINTR averages all layers;
# - lr 0.05: the paper's 5e-3 is for SD's 1024-d tokens; tiny-sd's are 32-d (Diff-Tracker,
#   harmonized 0.5 / 0.5, threshold 0.5: val AO 0.04 at 5e-3, 0.20 at 0.05);
# - Diff-Tracker alpha 1 (the cross map alone): tiny-sd's top-level self-attention sends the
#   target's pixels to the background, so S^T C is lower inside the target than around it
#   (alpha 1, threshold 0.2: 0.33; with threshold 0.3 and the readout's scale_step 1.1: 0.36);
# - DINTR normalize False: its all-layer S^T C reads better raw (0.26) than divided by the
#   attention received (0.12) or replaced by C (alpha 1: 0.18) -- with 20 init steps and
#   re-injection; with the size model below (10 "val" sequences x 40 frames) those settings give
#   0.42, Diff-Tracker's maps (cross maps of up levels 1-2, alpha 1) 0.33 at 20 init steps and
#   0.46 at 50, and without re-injection 0.54 (100 init steps: 0.558, 200: 0.488). Re-fitting
#   the token each frame to its own read (lr 0.05) drifts it onto misreads (re-injection alone:
#   0.47), so DINTR ships with reinject_steps 0; num_steps 1 (max_timestep 100): 0.536, 25 %
#   faster (its 3 labels now run as one batched UNet call);
# - DINTR finetune_steps None (0 with offset "anchor", whose fine-tuned offset prediction is
#   never used): 10 "val" x 40 frames with all the settings here, one step 0.691 at 1.0 frames/s,
#   none 0.726 at 1.7 (at 50 init steps without crops, earlier: 0.540 / 0.539);
# - DINTR context 3 (diffusion.crops: the UNet sees a square of side 3 max(w, h) around the
#   previous box, the square holding the readout's 3x search window, instead of the whole
#   frame): 20 "val" sequences x 40 frames 0.618 (0.649 on val 0-9, 0.586 on 10-19), the whole
#   frame 0.558 (0.558 / 0.558), side 3 sqrt(w h) 0.603 (0.644 / 0.561); 362 vs 307 ms per later frame.
#   Side c sqrt(w h) on val 0-9 for c = 2 / 2.5 / 3 / 4 / 6: 0.451 / 0.607 / 0.644 / 0.582 /
#   0.539: too small a square loses fast targets and the surroundings the map contrasts with, a
#   larger one brings the copies and the padding back. The whole frame at 96 px input instead
#   of 64 (more map cells per target) gave 0.609 on val 0-9 at 4.5 x the time;
# - DINTR motion 0.3 (diffusion.readout.BoxReader: the crop and the search window centred on a
#   constant-velocity prediction, v <- 0.7 v + 0.3 step): 20 x 40 "val" 0.618 -> 0.643 (0.669 /
#   0.618 on the halves); momentum 0.5: 0.640, 1 (a script without the in-image bound): 0.631;
#   a SiamFC cosine-window weight on the peak (influence 0.3) on top lost on the 9 sequences
#   with copies or fast targets (0.474 -> 0.470; alone 0.385; the crops alone 0.426);
# - threshold 0.3 for Diff-Tracker: tiny-sd's cross maps are peaky; 0.5 cuts the target;
#   DINTR on its crops 0.45 (20 x 40 "val", with context and motion: 0.3 0.643, 0.45 0.660
#   (0.694 / 0.628 on the halves), 0.55 0.651): a higher cut keeps a copy touching the target
#   out of the connected region more often (benchmarks/results/diffusion-trackers-tiny-sd-cpu-2026-12-07c);
# - Diff-Tracker prompt_steps 100 (20 x 40 frames, with the size model): 0.552 at 50, 0.566 at
#   100 (lr 0.1: 0.559), 0.573 at 200, not taken: twice the first-frame time for a gain inside
#   the spread, and DINTR's token overfits at 200 (above); the maps hardly depend on the noise (the clean latent: 0.560; three timestep labels
#   averaged: 0.560), and none of a Hann-window prior on the peak, a constant-velocity window, a
#   larger window, another component choice or a prompt loss restricted to the window or
#   rewarding mass did better: the misreads are same-texture distractors, which the maps cannot
#   tell apart (benchmarks/results/diffusion-trackers-tiny-sd-cpu-2026-12-06c);
# - size_lr 0.5 and calibrate_size (diffusion.readout.BoxReader): Diff-Tracker's val AO, 20 x 40
#   frames, from 0.44 (region box bounded by scale_step) to 0.55; threshold 0.2/0.3/0.4/0.5 with
#   them: 0.49/0.50/0.48/0.49 on a model trained with the pixel loss, whose maps differ;
# - Diff-Tracker's updater off: one pass of `fasttrack train diff-tracker-updater` (24 labeled
#   + 24 pseudo-labeled sequences, 10 min) took val AO from 0.355 (identity updater) to 0.200,
#   so the best-val weights shipped are the identity ones and running them changes nothing.
TRACKER_SETTINGS = {
    "DiffTracker": dict(cross_layers=["up_blocks.1.*", "up_blocks.2.*"], self_layers=["up_blocks.2.*"],
                        prompt_steps=100, lr=0.05, alpha=1.0, threshold=0.3, use_updater=False,
                        size_lr=0.5, calibrate_size=True),
    "DINTR": dict(cross_layers=["up_blocks.1.*", "up_blocks.2.*"], self_layers=["up_blocks.2.*"],
                  alpha=1.0, num_steps=3, init_steps=100, lr=0.05, threshold=0.45, normalize=False,
                  finetune_steps=None,
                  reinject_steps=0, size_lr=0.5, calibrate_size=True, context=3.0, motion=0.3),
}

# Where `DiffTracker.pretrained()` / `DINTR.pretrained()` read the shipped model.
TINY_SD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "tiny_sd")


def shipped_folder() -> str:
    """The shipped tiny-sd folder; FileNotFoundError naming the command that makes it."""
    if not os.path.isfile(os.path.join(TINY_SD_DIR, "unet", "config.json")):
        raise FileNotFoundError(f"no shipped tiny-sd model at {TINY_SD_DIR}: train one with "
                                "`fasttrack train tiny-sd` and scripts/ship_weights.py tiny-sd")
    return TINY_SD_DIR


class WordTokenizer:
    """Lower-cased words (letters, digits, hyphens) -> ids: 0 padding, 1 start, 2 end, 3 unknown,
    then the vocabulary. `__call__(texts)` -> (B, length) int64, CLIP-style: start, words, end,
    then padding; longer texts are cut to length - 2 words."""

    SPECIAL = ("<pad>", "<start>", "<end>", "<unk>")

    def __init__(self, words, length: int):
        self.words = sorted(set(words))
        self.length = int(length)
        self.index = {w: i + len(self.SPECIAL) for i, w in enumerate(self.words)}

    @property
    def vocab_size(self) -> int:
        return len(self.SPECIAL) + len(self.words)

    @staticmethod
    def split(text: str) -> list[str]:
        return re.findall(r"[a-z0-9-]+", text.lower())

    def __call__(self, texts) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.zeros(len(texts), self.length, dtype=torch.long)
        for r, text in enumerate(texts):
            toks = [self.index.get(w, 3) for w in self.split(text)][: self.length - 2]
            row = [1, *toks, 2]
            ids[r, : len(row)] = torch.tensor(row)
        return ids


class TinyTextEncoder(nn.Module):
    """Token ids (B, L) -> context (B, L, dim): embedding + learned positions, one pre-norm
    transformer layer (bidirectional), final LayerNorm (as CLIP's output, what the UNet reads)."""

    def __init__(self, vocab_size: int, dim: int = 32, length: int = 16, heads: int = 2, hidden: int = 64):
        super().__init__()
        self.config = dict(vocab_size=int(vocab_size), dim=int(dim), length=int(length),
                           heads=int(heads), hidden=int(hidden))
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(length, dim) * 0.02)
        self.layer = nn.TransformerEncoderLayer(dim, heads, hidden, dropout=0.0, batch_first=True,
                                                norm_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.layer(self.embed(ids) + self.pos[: ids.shape[1]]))


def tiny_sd_modules(vocab_size: int, seed: int = 0):
    """Fresh (vae, unet, text_encoder) of the tiny-sd architecture, seeded."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(seed)
    vae = AutoencoderKL(**TINY_SD_VAE)
    unet = UNet2DConditionModel(**TINY_SD_UNET)
    text = TinyTextEncoder(vocab_size, **TINY_SD_TEXT)
    return vae, unet, text


def save_text_encoder(path, encoder: TinyTextEncoder, tokenizer: WordTokenizer) -> None:
    """Write text_encoder/ (config.json, model.safetensors) and tokenizer/vocab.json."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    for sub in ("text_encoder", "tokenizer"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    with open(os.path.join(path, "text_encoder", "config.json"), "w") as f:
        json.dump({"_class_name": "fasttrack.TinyTextEncoder", **encoder.config}, f, indent=2)
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()},
              os.path.join(path, "text_encoder", "model.safetensors"))
    with open(os.path.join(path, "tokenizer", "vocab.json"), "w") as f:
        json.dump({"words": tokenizer.words, "length": tokenizer.length}, f, indent=2)


def load_text_encoder(path) -> tuple[TinyTextEncoder, WordTokenizer]:
    """Read what save_text_encoder wrote (eval mode)."""
    from safetensors.torch import load_file

    path = os.fspath(path)
    with open(os.path.join(path, "text_encoder", "config.json")) as f:
        cfg = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    with open(os.path.join(path, "tokenizer", "vocab.json")) as f:
        voc = json.load(f)
    enc = TinyTextEncoder(**cfg)
    enc.load_state_dict(load_file(os.path.join(path, "text_encoder", "model.safetensors")))
    return enc.eval(), WordTokenizer(voc["words"], voc["length"])
