"""Training data for fasttrack's trackers: on-the-fly synthetic sequences and real data sets.

A training source is "photos" (sequences of the "train" photographs,
fasttrack.data.photo_sequences: photographed objects over background photographs; the photo
library must have been fetched with `fasttrack dataset photos`), "synthetic" (a pool of `random_synthetic_sequence`s from the "train"
seed stream, one of them replaced by a fresh one every `refresh_every` steps, so a long run
sees thousands of distinct sequences while each step stays cheap) or a folder that
`fasttrack.data.open_sequences` reads: a GOT-10k split (train/), a LaSOT root or category, an
OTB root, one sequence folder -- the same readers `fasttrack eval` uses. Frames of real data are
read from disk when sampled.

With both "synthetic" and "photos" the pool is a mix: each draw is a photo sequence with
probability `photo_fraction` (0.5).

Held-out data never comes from the train stream: `validation_sequences` draws the "val" splits
(other seed streams, frame sizes the train split never uses, and for photos the val
photographs, which training never sees; fasttrack.data.synthetic, photo_sequences).
"""
from __future__ import annotations

import numpy as np

from ..data import open_sequences
from ..data.synthetic import SPLIT_SIZES, random_synthetic_sequence, synthetic_split

GENERATED = ("synthetic", "photos")

__all__ = ["TrainingData", "validation_sequences"]


class TrainingData:
    """The sequences a trainer samples from.

    Args:
        sources: "synthetic" and / or data set folders (see the module docstring).
        seed: seeds the synthetic pool and its refreshes.
        pool: synthetic sequences held at once; frames: their length.
        refresh_every: steps between two replacements of a synthetic sequence.
        close_distractors: fraction of synthetic sequences with a same-texture distractor that
            keeps crossing the target (random_synthetic_sequence). Off by default: at 0.3 a
            4500-step run reached held-out test AO 0.720, the 3500-step run without 0.776
            (the distractor switches it targets remained).
    `sequences` is the current list (real ones first); call `step()` once per training step.
    """

    def __init__(self, sources=("synthetic",), seed: int = 0, pool: int = 64, frames: int = 40,
                 refresh_every: int = 25, close_distractors: float = 0.0, wrong_text: float = 0.0,
                 photo_fraction: float = 0.5):
        if isinstance(sources, str):
            sources = (sources,)
        sources = list(sources)
        if not sources:
            raise ValueError("sources must name at least one source ('synthetic' or a folder)")
        if not 0.0 <= close_distractors <= 1.0:
            raise ValueError(f"close_distractors must be in [0, 1], got {close_distractors}")
        if not 0.0 <= wrong_text <= 1.0:
            raise ValueError(f"wrong_text must be in [0, 1], got {wrong_text}")
        if pool < 1 or frames < 2 or refresh_every < 1:
            raise ValueError(f"pool must be >= 1, frames >= 2 and refresh_every >= 1, got "
                             f"{pool}, {frames}, {refresh_every}")
        if not 0.0 <= photo_fraction <= 1.0:
            raise ValueError(f"photo_fraction must be in [0, 1], got {photo_fraction}")
        self.real = []
        for src in sources:
            if src in GENERATED:
                continue
            seqs = [s for s in open_sequences(src) if s.gt is not None]
            if not seqs:
                raise ValueError(f"data source {src!r} holds no sequence with ground truth")
            self.real.extend(seqs)
        self.synthetic = "synthetic" in sources
        self.photos = None
        if "photos" in sources:
            from ..data.photos import PhotoLibrary

            self.photos = PhotoLibrary.open()
            self.photos.objects("train"), self.photos.backgrounds("train")  # fail now, not later
        self.photo_fraction = float(photo_fraction) if self.synthetic else 1.0
        self.frames, self.refresh_every = int(frames), int(refresh_every)
        self.close_distractors = float(close_distractors)
        self.wrong_text = float(wrong_text)
        self._rng = np.random.default_rng([404, int(seed)])
        generated = self.synthetic or self.photos is not None
        self._pool = [self._draw() for _ in range(pool)] if generated else []
        self._steps = 0

    def _draw(self):
        # (no draw without photos: the synthetic stream of earlier versions stays)
        if self.photos is not None and (not self.synthetic or self._rng.random() < self.photo_fraction):
            from ..data.photo_sequences import random_photo_sequence

            return random_photo_sequence(self._rng, self.photos, "train", self.frames)
        return random_synthetic_sequence(self._rng, self.frames, SPLIT_SIZES["train"],
                                         close_distractors=self.close_distractors,
                                         wrong_text=self.wrong_text)

    @property
    def sequences(self) -> list:
        return self.real + self._pool

    def describe(self) -> str:
        parts = [f"{len(self.real)} real sequences"] if self.real else []
        if self._pool:
            kind = ("synthetic" if self.photos is None else "photo" if not self.synthetic
                    else f"synthetic + photo ({self.photo_fraction:g} photo)")
            parts.append(f"{kind} pool of {len(self._pool)} x {self.frames} frames, one "
                         f"replaced every {self.refresh_every} steps")
        return ", ".join(parts)

    def step(self) -> None:
        """Advance one training step (replaces a synthetic sequence every refresh_every)."""
        self._steps += 1
        if self._pool and self._steps % self.refresh_every == 0:
            i = int(self._rng.integers(len(self._pool)))
            self._pool[i] = self._draw()

    def state_dict(self) -> dict:
        """What `--resume` needs to continue the same stream (the pool is regenerated from it
        only approximately: the replaced sequences are drawn afresh from the saved state)."""
        return {"rng": self._rng.bit_generator.state, "steps": self._steps}

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]
        self._steps = int(state["steps"])


def validation_sequences(num: int = 6, frames: int = 40, sources=("synthetic",)) -> list:
    """The "val" split: `num` sequences the train stream never draws: synthetic ones, or with
    "photos" among `sources` half of them (rounded up) from the photo "val" split."""
    from ..data.photo_sequences import photo_split

    if "photos" not in sources:
        return synthetic_split("val", num=num, num_frames=frames)
    n_photo = (num + 1) // 2 if "synthetic" in sources or len(sources) > 1 else num
    seqs = photo_split("val", num=n_photo, num_frames=frames)
    if num > n_photo:
        seqs = synthetic_split("val", num=num - n_photo, num_frames=frames) + seqs
    return seqs
