"""Describing a synthetic target in words: the language side of the synthetic sequences.

The target of :mod:`fasttrack.data.synthetic` is a textured sprite with one dominant colour
channel. :func:`describe_target` names three of its attributes, each from a closed vocabulary
(:data:`DESCRIPTION_WORDS`), and puts them in one of a few sentence templates with a noun:

- colour: the sprite's dominant channel ("red", "green", "blue");
- size: ``r = sqrt(h w) / sqrt(H W)`` of the sprite (h, w) at scale 1 in the (H, W) frame:
  "small" for r < 0.155, "large" for r > 0.215, else "medium-sized";
- shape: the aspect w / h: "wide" above 1.3, "tall" below 1 / 1.3, else "square".

With probability `wrong` one attribute is replaced by another value of its vocabulary: real
descriptions are often inaccurate or go stale as the target changes, and a tracker that reads
them must not trust them blindly (the premise of the language-guided trackers' evaluation).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["describe_target", "target_words", "DESCRIPTION_WORDS", "NOUNS", "TEMPLATES"]

# attribute -> its possible values; the values are distinct words across attributes, nouns and
# templates, so a description can be read back word by word
DESCRIPTION_WORDS: dict[str, tuple[str, ...]] = {
    "colour": ("red", "green", "blue"),
    "size": ("small", "medium-sized", "large"),
    "shape": ("wide", "tall", "square"),
}
NOUNS = ("box", "block", "patch", "tile", "object")
TEMPLATES = (
    "the {size} {colour} {shape} {noun}",
    "a {colour} {noun} that is {size} and {shape}",
    "{size} {shape} {colour} {noun}",
    "the {colour} {noun}, {size} and {shape}",
    "a {shape} {noun} in {colour}, {size}",
)

# Size classes of r = sqrt(h w) / sqrt(H W), at the tertiles of random_synthetic_sequence's
# draws so the three words are about equally common. Measured over 200 draws per split
# (seed streams (split tag, i), i < 200, as synthetic_split), small / medium / large:
#   train 32.0 / 37.0 / 31.0 %, val 37.5 / 30.5 / 32.0 %, test 31.5 / 31.0 / 37.5 %,
#   all 600: 33.7 / 32.8 / 33.5 % (tertiles 0.153 and 0.216).
# The first guess, 0.16 / 0.26, gave train 34.0 / 52.5 / 13.5 %: r rarely exceeds 0.26.
SMALL_BELOW = 0.155
LARGE_ABOVE = 0.215
# w / h beyond this factor either way is "wide" / "tall": the draws' aspect is log-uniform in
# [0.5, 2], so log(1.3) / log(2) = 38 % are square; measured over the same 600 draws:
# square / wide / tall 37.3 / 31.7 / 31.0 %
ASPECT = 1.3


def _check(sprite, frame_size) -> tuple[np.ndarray, int, int]:
    a = np.asarray(sprite)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
        raise ValueError(f"sprite must be an (h, w, 3) uint8 array with h, w >= 1, got shape "
                         f"{a.shape} and dtype {a.dtype}")
    try:
        H, W = (int(v) for v in frame_size)
        ok = (H, W) == tuple(frame_size) and H > 0 and W > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"frame_size must be a pair of positive ints (H, W), got {frame_size!r}")
    return a, H, W


def target_words(sprite: np.ndarray, frame_size) -> dict[str, str]:
    """The true attribute words of a target (module docstring: colour, size, shape).

    Args:
        sprite: (h, w, 3) uint8 RGB texture of the target at scale 1.
        frame_size: (H, W) of the frames it moves in.
    Returns:
        {"colour": ..., "size": ..., "shape": ...}, values from :data:`DESCRIPTION_WORDS`.
    """
    a, H, W = _check(sprite, frame_size)
    h, w = a.shape[:2]
    # the channel with the highest mean: for the synthetic sprite, the one >= 200 everywhere
    colour = DESCRIPTION_WORDS["colour"][int(np.argmax(a.reshape(-1, 3).mean(0)))]
    r = math.sqrt(h * w) / math.sqrt(H * W)
    size = "small" if r < SMALL_BELOW else "large" if r > LARGE_ABOVE else "medium-sized"
    aspect = w / h
    shape = "wide" if aspect > ASPECT else "tall" if aspect < 1 / ASPECT else "square"
    return {"colour": colour, "size": size, "shape": shape}


def describe_target(sprite: np.ndarray, frame_size, rng: np.random.Generator | None = None,
                    wrong: float = 0.0) -> str:
    """A short English description of a synthetic target, e.g. "the small red wide box".

    Args:
        sprite: (h, w, 3) uint8 RGB texture of the target at scale 1.
        frame_size: (H, W) of the frames it moves in (the size word is relative to it).
        rng: picks the template and noun, then whether and how the description is wrong (in
            that order, so the same generator state gives the same sentence for every `wrong`,
            up to the replaced word). None: the first template with "box", nothing wrong.
        wrong: probability in [0, 1] that ONE attribute (colour, size or shape, picked by rng)
            is replaced by a different value of its vocabulary; > 0 needs `rng`.
    Returns:
        One line of lower-case words (str).
    """
    words = target_words(sprite, frame_size)
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    try:
        ok = 0.0 <= float(wrong) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"wrong must be a probability in [0, 1], got {wrong!r}")
    if rng is None:
        if wrong > 0:
            raise ValueError(f"rng is None but wrong={wrong!r} > 0: a wrong description is "
                             "drawn, pass a numpy.random.Generator")
        return TEMPLATES[0].format(noun=NOUNS[0], **words)
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
    noun = NOUNS[int(rng.integers(len(NOUNS)))]
    # always drawn, so wrong=0 and wrong>0 leave the generator in the same state when not wrong
    if rng.random() < wrong:
        attr = tuple(DESCRIPTION_WORDS)[int(rng.integers(len(DESCRIPTION_WORDS)))]
        others = [v for v in DESCRIPTION_WORDS[attr] if v != words[attr]]
        words[attr] = others[int(rng.integers(len(others)))]
    return template.format(noun=noun, **words)
