"""DMTrack's language side: a description -> text tokens T_q (B, L, C) (the DMTrack paper, section 3.1).

The paper encodes the description with BERT-base-uncased, at most 36 tokens including CLS and
SEP, once per sequence. Two encoders stand behind one interface here:

- `BuiltinTextEncoder` (`DMTrackConfig.text_encoder = "builtin"`, the default, offline): words
  are lower-cased, split on anything that is not a letter or digit and hashed (CRC-32, stable
  across runs and machines) into `vocab_size - 3` buckets; ids 0 / 1 / 2 are PAD / CLS / SEP.
  [CLS] w_1 .. w_n [SEP] is padded with PAD to `text_len` (words beyond text_len - 2 are
  dropped), embedded, given a learned position embedding and run through `text_depth`
  pre-norm transformer blocks (DeTrack's VisualBlock, the same thing) and a final LayerNorm.
  Trained with the tracker. Hashing instead of a vocabulary file: nothing to download, unseen
  words still get an embedding (shared with whatever else falls in their bucket).
- `BertTextEncoder` (`text_encoder = "bert"`): a pretrained BERT-family model loaded with
  Hugging Face transformers from a LOCAL folder (`pip install fasttrack[text]`; nothing is ever
  downloaded), frozen, its last hidden state projected from its width to C by a trained Linear.

Padding: the tokens are always `text_len` long and the cross-attention reads the PAD positions
too (no key mask), the CLIP / Stable Diffusion convention; the encoder's outputs at PAD carry
the sentence's context. This keeps the cross-attention on `fasttrack.ops.attention`, which has
no key mask. A target without a description has `has_text = 0` (model.py gates it off).
"""
from __future__ import annotations

import re
import zlib

import torch
import torch.nn as nn

__all__ = ["PAD", "CLS", "SEP", "tokenize", "BuiltinTextEncoder", "BertTextEncoder", "clean_text"]

PAD, CLS, SEP = 0, 1, 2
_WORD = re.compile(r"[a-z0-9]+")


def clean_text(text) -> str | None:
    """The description as the tracker uses it: None for None, "" or whitespace only (vision
    only); else the string with its whitespace collapsed. TypeError for non-strings."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise TypeError(f"text must be a string or None, got {type(text).__name__}")
    text = " ".join(text.split())
    return text or None


def tokenize(texts: list, text_len: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Hashed word tokens of the builtin encoder.

    Args:
        texts: B descriptions (str or None). text_len: L >= 3. vocab_size: >= 4.
    Returns:
        ids (B, L) int64 ([CLS] words [SEP] PAD..; all PAD for None) and has_text (B,) float32
        (1 where a description was given)."""
    ids = torch.full((len(texts), text_len), PAD, dtype=torch.long)
    has = torch.zeros(len(texts))
    for i, text in enumerate(texts):
        text = clean_text(text)
        if text is None:
            continue
        words = _WORD.findall(text.lower())[: text_len - 2]
        row = [CLS] + [3 + zlib.crc32(w.encode()) % (vocab_size - 3) for w in words] + [SEP]
        ids[i, : len(row)] = torch.tensor(row)
        has[i] = 1.0
    return ids, has


class BuiltinTextEncoder(nn.Module):
    """forward(texts: list of B str/None) -> (tokens (B, L, C), has_text (B,)) on the module's
    device and dtype; see the module docstring."""

    def __init__(self, dim: int, text_len: int, vocab_size: int, depth: int, heads: int,
                 mlp_ratio: float = 4.0, eps: float = 1e-6):
        super().__init__()
        from ..detrack.model import VisualBlock

        self.text_len, self.vocab_size = text_len, vocab_size
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, text_len, dim))
        self.blocks = nn.ModuleList(VisualBlock(dim, heads, mlp_ratio, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, texts: list) -> tuple[torch.Tensor, torch.Tensor]:
        ids, has = tokenize(texts, self.text_len, self.vocab_size)
        dev = self.pos.device
        t = self.embed(ids.to(dev)) + self.pos
        for blk in self.blocks:
            t, _, _ = blk(t, 0)
        return self.norm(t), has.to(dev, t.dtype)


class BertTextEncoder(nn.Module):
    """A frozen local BERT-family encoder (Hugging Face transformers) projected to C.

    Args:
        path: a local folder holding the model and its tokenizer (config.json, weights,
            vocab.txt / tokenizer.json), e.g. a saved bert-base-uncased.
        dim: C, the tracker's width. text_len: max tokens, CLS and SEP included (paper: 36).
    forward(texts) -> (tokens (B, text_len, C), has_text (B,)) as BuiltinTextEncoder. The
    BERT weights are not part of a DMTrack checkpoint (only the projection is); the checkpoint
    records the folder, which must exist where it is loaded."""

    def __init__(self, path, dim: int, text_len: int, bert_dim: int = 768):
        super().__init__()
        try:
            from transformers import AutoModel, AutoTokenizer
        except ModuleNotFoundError as exc:
            if exc.name != "transformers":
                raise
            raise ImportError("text_encoder='bert' needs Hugging Face transformers: pip install "
                              "'fasttrack[text]' (or use text_encoder='builtin')") from None
        except ImportError as exc:
            # transformers >= 5 imports Hugging Face's `kernels` package; run from the root of a
            # fasttrack checkout, the checkout's own kernels/ folder shadows it
            raise ImportError(f"importing transformers failed ({exc}); if this runs from the root "
                              "of a fasttrack source checkout, its kernels/ folder shadows "
                              "Hugging Face's `kernels` package: run from another folder") from None
        import os

        if not os.path.isdir(str(path)):
            raise ValueError(f"bert_path {str(path)!r} is not a folder; give a local BERT folder "
                             "(config, weights, tokenizer files): fasttrack never downloads one")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            # real weights on the CPU even when the tracker is built on the meta device (the
            # BERT is not a submodule, so to_empty would never materialize it)
            with torch.device("cpu"):
                bert = AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(f"bert_path {str(path)!r}: cannot load a BERT model and tokenizer "
                             f"({str(exc).splitlines()[0]})") from None
        if bert.config.hidden_size != bert_dim:
            raise ValueError(f"bert_path {str(path)!r} has width {bert.config.hidden_size}, the "
                             f"config says bert_dim = {bert_dim}")
        bert.requires_grad_(False).eval()
        # kept out of the module tree: not in state_dict, not moved by .half(), never trained
        self.__dict__["bert"] = bert
        self.text_len = text_len
        self.proj = nn.Linear(bert_dim, dim)

    def forward(self, texts: list) -> tuple[torch.Tensor, torch.Tensor]:
        cleaned = [clean_text(t) for t in texts]
        has = torch.tensor([0.0 if t is None else 1.0 for t in cleaned])
        enc = self.tokenizer([t or "" for t in cleaned], padding="max_length", truncation=True,
                             max_length=self.text_len, return_tensors="pt")
        bert = self.__dict__["bert"].to(self.proj.weight.device)
        with torch.no_grad():
            hidden = bert(**{k: v.to(self.proj.weight.device) for k, v in enc.items()}).last_hidden_state
        t = self.proj(hidden.to(self.proj.weight.dtype))
        return t, has.to(t.device, t.dtype)
