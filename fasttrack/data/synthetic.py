"""Synthetic tracking sequences with exact ground truth, in numpy (no device, no files).

A textured sprite moves along a smooth (Lissajous) path over a background. The sprite is pasted
at integer pixel positions with an integer size, so its box [x, y, w, h] is exact: the sprite
covers exactly the pixels ``x <= col < x + w``, ``y <= row < y + h``.

Colour never gives the target away: sprite and background pixels are drawn from the same range,
every channel in [40, 160] (the sprite's palette leans to one channel, which names its colour
in descriptions; its texture is a checkerboard, blocky noise or a smooth field). The optional
occluder is dark (all channels in [0, 30]). Without distractors, ``(frame != background).any(-1)``
is the union of the sprite box and the occluder bar (up to sprite pixels that happen to equal
the background's in all three channels). Distractors are copies of the
target's own texture (so colour alone cannot tell them apart) on their own paths, drawn under
the target; their boxes are in ``meta["distractors"]``.

Backgrounds: "waves" (smooth colour field), "texture" (blocky high-contrast noise at a random
cell size, the hard case for a tracker that keys on edges) and "flat" (one colour plus noise).
`speed` multiplies the path frequencies: at 1 the centre moves at most about 0.1 of the frame
per frame over 30 frames; 2.5 is fast motion.

Splits (`synthetic_split`): "train" sequences are drawn from a seed stream tagged "train",
"val" and "test" from their own tags and frame sizes that "train" never uses, so a model
trained on the first never saw the others. "test" is the fixed held-out set the shipped DeTrack
weights are judged on (`fasttrack eval synthetic:test`).

Descriptions: every sequence's ``text`` describes its target in words
(:func:`fasttrack.data.text.describe_target`: colour, size, shape), drawn from a generator of its
own so the frames and boxes are those of the versions without text. Descriptions are right in
`synthetic_sequence` and the "train" split (`random_synthetic_sequence`'s `wrong_text` makes
them wrong at will); in "val" and "test" each is wrong in one attribute with probability
:data:`HELD_OUT_WRONG_TEXT` (0.2), since real descriptions are often inaccurate.
"""

from __future__ import annotations

import numpy as np

from .sequences import Sequence
from .text import describe_target

__all__ = ["synthetic_sequence", "random_synthetic_sequence", "synthetic_split",
           "SPLIT_SIZES", "BACKGROUNDS", "HELD_OUT_WRONG_TEXT"]

BACKGROUNDS = ("waves", "texture", "flat")
# Frame sizes (H, W) per split: held-out splits use sizes the train split never draws.
SPLIT_SIZES = {
    "train": ((96, 128), (128, 160), (160, 208), (192, 256)),
    "val": ((112, 144), (176, 224)),
    "test": ((120, 150), (144, 192), (184, 240)),
}
_SPLIT_TAGS = {"train": 101, "val": 202, "test": 303}
# Probability that a held-out ("val", "test") description is wrong in one attribute: a tracker
# judged on them must cope with a description that does not fit (fixed: it defines the splits)
HELD_OUT_WRONG_TEXT = 0.2
# Seeds the description's generator, default_rng([seed, _TEXT_TAG]) (default_rng([split tag,
# index, _TEXT_TAG]) in the held-out splits), apart from the stream that draws the frames
_TEXT_TAG = 7

_MAX_SCALE = 1.3
_MIN_SCALE = 0.7


def _pair(value, name: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of ints (height, width), got {value!r}") from None
    if (a, b) != tuple(value) or a <= 0 or b <= 0:
        raise ValueError(f"{name} must be positive integers (height, width), got {value!r}")
    return a, b


def _smooth_field(rng: np.random.Generator, h: int, w: int, waves: int = 4) -> np.ndarray:
    """Sum of random plane waves, scaled to [0, 1]. Returns (h, w) float64."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    acc = np.zeros((h, w))
    for _ in range(waves):
        freq = rng.uniform(0.015, 0.09)
        ang = rng.uniform(0.0, np.pi)
        acc += np.sin(2 * np.pi * freq * (xx * np.cos(ang) + yy * np.sin(ang))
                      + rng.uniform(0, 2 * np.pi))
    return (acc - acc.min()) / max(float(np.ptp(acc)), 1e-12)


def _background(rng: np.random.Generator, h: int, w: int, kind: str = "waves") -> np.ndarray:
    """(h, w, 3) uint8 with all values in [40, 160]: a smooth colour field ("waves"), blocky
    noise ("texture") or one colour ("flat"), plus fine noise."""
    if kind == "waves":
        field = np.stack([_smooth_field(rng, h, w) for _ in range(3)], axis=-1)
    elif kind == "texture":
        cell = int(rng.integers(2, 7))
        blocks = rng.random(((h + cell - 1) // cell, (w + cell - 1) // cell, 3))
        field = np.repeat(np.repeat(blocks, cell, 0), cell, 1)[:h, :w]
        field = 0.6 * field + 0.4 * np.stack([_smooth_field(rng, h, w, 2) for _ in range(3)], -1)
    elif kind == "flat":
        field = np.broadcast_to(rng.random(3), (h, w, 3))
    else:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {kind!r}")
    img = 45 + 105 * field + rng.uniform(-5, 5, size=(h, w, 3))
    return np.clip(np.rint(img), 40, 160).astype(np.uint8)


def _sprite(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 texture with every value in [40, 160], the backgrounds' range: a
    checkerboard, blocky noise or a smooth field (a third each) in a palette that leans to one
    channel (its mean the highest, which names the colour in descriptions), so no pixel value
    tells the sprite from a background."""
    kind = int(rng.integers(3))
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == 0:
        cell = max(2, min(h, w) // 5)
        pattern = ((yy // cell + xx // cell) % 2).astype(np.float64)
    elif kind == 1:
        cell = int(rng.integers(2, max(3, min(h, w) // 3)))
        pattern = rng.random(((h + cell - 1) // cell, (w + cell - 1) // cell))
        pattern = np.repeat(np.repeat(pattern, cell, 0), cell, 1)[:h, :w]
    else:
        pattern = _smooth_field(rng, h, w, waves=3)
    grad = _smooth_field(rng, h, w, waves=2)
    img = np.empty((h, w, 3))
    dom = int(rng.integers(3))
    for c in range(3):
        lo, hi = (0.55, 1.0) if c == dom else (0.0, 0.6)
        a, b = rng.uniform(lo, hi, size=2)
        img[..., c] = (a * pattern + b * (1 - pattern)) * (0.8 + 0.2 * grad)
    return np.clip(np.rint(45 + 110 * img), 40, 160).astype(np.uint8)


def _resize_nearest(img: np.ndarray, h: int, w: int) -> np.ndarray:
    rows = (np.arange(h) * img.shape[0]) // h
    cols = (np.arange(w) * img.shape[1]) // w
    return img[rows][:, cols]


def _path(rng, num_frames, H, W, hmax, wmax, speed):
    """Centre (cx, cy) of a Lissajous path over num_frames frames, inside the frame."""
    t = np.arange(num_frames, dtype=np.float64)
    ax, ay = 0.45 * (W - wmax), 0.45 * (H - hmax)
    fx, fy = rng.uniform(0.5, 1.2, size=2) * speed
    px, py = rng.uniform(0, 2 * np.pi, size=2)
    cx = W / 2 + ax * np.sin(2 * np.pi * fx * t / max(num_frames, 2) + px)
    cy = H / 2 + ay * np.sin(2 * np.pi * fy * t / max(num_frames, 2) + py)
    return cx, cy


def synthetic_sequence(num_frames: int = 30, size=(128, 160), sprite_size=(24, 32), seed: int = 0,
                       occlusion: bool = False, scale_change: bool = False,
                       background: str = "waves", distractors: int = 0,
                       speed: float = 1.0, close_distractors: int = 0) -> Sequence:
    """Generate a deterministic synthetic sequence.

    Args:
        num_frames: number of frames N >= 1.
        size: (H, W) of the frames.
        sprite_size: (h, w) of the sprite at scale 1; at most H / 1.3 - 2 and W / 1.3 - 2 (room
            to move and to grow), at least 4.
        seed: seeds the textures, path, and occluder; same arguments give identical output.
        occlusion: a dark vertical bar of width w // 2 (w the sprite width at scale 1) sweeps left
            to right over the full frame height and covers the sprite's centre at frame N // 2; it
            hides at most part of the sprite (gt stays the full sprite box).
        scale_change: the sprite's size follows s(t) = 1 + 0.3 sin(2 pi t / N + phase), rounded
            to integer pixels (nearest-neighbour resampling of the texture).
        background: "waves" (default), "texture" or "flat" (module docstring).
        distractors: number of same-texture sprites on their own paths, under the target.
        speed: multiplies the path frequencies (> 0; 1 as before, 2.5 is fast motion).
        close_distractors: more same-texture sprites that stay near the target: each follows
            the target's path plus an offset along a random direction that swings between
            +-(0.8 to 1.6) target diagonals, so it passes beside and across the target again and again
            (the case a tracker confuses most; training data, the held-out splits have none).
    Returns:
        Sequence named "synthetic-<seed>" whose frames are (H, W, 3) uint8 arrays and gt (N, 4)
        float32 exact boxes. meta holds "background" (H, W, 3) uint8, "sprite" (h, w, 3) uint8
        (texture at scale 1), "occluder" ((N, 4) float32 bar boxes clipped to the frame, w may be
        0 when the bar is outside, or None), "distractors" ((D, N, 4) float32 boxes) and the
        arguments. With the defaults the frames are exactly those of earlier versions. ``text``
        is a right description of the target (``describe_target``) drawn with
        ``default_rng([seed, 7])``, which leaves the frames and boxes untouched.
    """
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    num_frames = int(num_frames)
    H, W = _pair(size, "size")
    h0, w0 = _pair(sprite_size, "sprite_size")
    if min(h0, w0) < 4 or h0 * _MAX_SCALE > H - 2 or w0 * _MAX_SCALE > W - 2:
        raise ValueError(f"sprite_size {(h0, w0)} must be >= 4 and at most size / 1.3 - 2 "
                         f"for size {(H, W)}")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    if int(distractors) != distractors or distractors < 0:
        raise ValueError(f"distractors must be an int >= 0, got {distractors!r}")
    if int(close_distractors) != close_distractors or close_distractors < 0:
        raise ValueError(f"close_distractors must be an int >= 0, got {close_distractors!r}")
    if not (np.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive number, got {speed!r}")
    kind = background
    rng = np.random.default_rng(seed)
    background = _background(rng, H, W, kind)
    sprite = _sprite(rng, h0, w0)

    t = np.arange(num_frames, dtype=np.float64)
    if scale_change:
        scale = 1 + 0.3 * np.sin(2 * np.pi * t / max(num_frames, 2) + rng.uniform(0, 2 * np.pi))
    else:
        scale = np.ones(num_frames)
    hs = np.maximum(np.rint(h0 * scale).astype(int), 1)
    ws = np.maximum(np.rint(w0 * scale).astype(int), 1)
    # smooth path of the centre: a Lissajous curve inside the frame
    hmax, wmax = int(np.ceil(h0 * _MAX_SCALE)), int(np.ceil(w0 * _MAX_SCALE))
    cx, cy = _path(rng, num_frames, H, W, hmax, wmax, speed)
    xs = np.clip(np.rint(cx - ws / 2).astype(int), 0, W - ws)
    ys = np.clip(np.rint(cy - hs / 2).astype(int), 0, H - hs)

    occluder = None
    if occlusion:
        bw = max(2, w0 // 2)
        mid = num_frames // 2
        bar_speed = W / max(num_frames, 2)
        left = np.rint(cx[mid] - bw / 2 + bar_speed * (t - mid)).astype(int)
        x0, x1 = np.clip(left, 0, W), np.clip(left + bw, 0, W)
        occluder = np.stack([x0, np.zeros_like(x0), x1 - x0, np.full_like(x0, H)], 1)
        occluder = occluder.astype(np.float32)
        stripes = (10 + 15 * ((np.arange(H) // 4) % 2)).astype(np.uint8)[:, None, None]

    # distractors: the target's texture at its scale-1 size, their own paths (drawn after the
    # target's random numbers, so distractors=0 leaves the frames of earlier versions)
    dboxes = np.zeros((int(distractors), num_frames, 4), dtype=np.float32)
    for d in range(int(distractors)):
        dx, dy = _path(rng, num_frames, H, W, h0, w0, speed)
        dboxes[d, :, 0] = np.clip(np.rint(dx - w0 / 2), 0, W - w0)
        dboxes[d, :, 1] = np.clip(np.rint(dy - h0 / 2), 0, H - h0)
        dboxes[d, :, 2:] = (w0, h0)

    # close distractors: drawn after every other random number (frames of earlier versions
    # unchanged); the offset swings through zero, so the copy crosses the target's position
    close = []
    for _ in range(int(close_distractors)):
        ang = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.8, 1.6) * np.hypot(h0, w0)
        swing = amp * np.cos(2 * np.pi * rng.uniform(0.5, 1.5) * t / max(num_frames, 2)
                             + rng.uniform(0, 2 * np.pi))
        bx = np.clip(np.rint(cx + swing * np.cos(ang) - w0 / 2), 0, W - w0)
        by = np.clip(np.rint(cy + swing * np.sin(ang) - h0 / 2), 0, H - h0)
        close.append(np.stack([bx, by, np.full_like(bx, w0), np.full_like(by, h0)], 1))
    if close:
        dboxes = np.concatenate([dboxes, np.stack(close).astype(np.float32)], 0)

    frames, gt = [], np.empty((num_frames, 4), dtype=np.float32)
    for i in range(num_frames):
        img = background.copy()
        for d in range(len(dboxes)):
            a, b = int(dboxes[d, i, 0]), int(dboxes[d, i, 1])
            img[b:b + h0, a:a + w0] = sprite
        x, y, h, w = int(xs[i]), int(ys[i]), int(hs[i]), int(ws[i])
        img[y:y + h, x:x + w] = sprite if (h, w) == (h0, w0) else _resize_nearest(sprite, h, w)
        if occluder is not None:
            a, b = int(occluder[i, 0]), int(occluder[i, 0] + occluder[i, 2])
            img[:, a:b] = stripes
        frames.append(img)
        gt[i] = (x, y, w, h)
    meta = {"background": background, "sprite": sprite, "occluder": occluder, "seed": seed,
            "occlusion": occlusion, "scale_change": scale_change, "background_kind": kind,
            "distractors": dboxes, "speed": float(speed)}
    # seed None (fresh entropy for the frames): the wording is drawn from fresh entropy too
    text_rng = np.random.default_rng(None if seed is None else [seed, _TEXT_TAG])
    text = describe_target(sprite, (H, W), rng=text_rng)
    return Sequence(f"synthetic-{seed}", frames, gt, meta=meta, text=text)


def random_synthetic_sequence(rng: np.random.Generator, num_frames: int = 40,
                              sizes=SPLIT_SIZES["train"], name: str | None = None,
                              close_distractors: float = 0.0,
                              wrong_text: float = 0.0) -> Sequence:
    """One sequence with every condition drawn from `rng`: frame size from `sizes`, sprite
    height 12-32 % of the frame and aspect 0.5-2, background kind, 0-2 distractors (40 %),
    occlusion (25 %), scale change (35 %), speed 0.3-2.0 (slow to fast: at 2 over 40 frames
    the target moves up to about one own size per frame). With probability
    `close_distractors` (0 for the held-out splits, whose draws it leaves unchanged) the
    sequence also gets one distractor that keeps passing near and across the target.
    With probability `wrong_text` (0: the right description of `synthetic_sequence`) ``text``
    is wrong in one attribute; it is drawn from ``default_rng([seed, 7])`` of the sequence's
    seed (``meta["seed"]``), not from `rng`, so neither the frames nor `rng`'s later draws
    change, and a wrong description is the right one with one word replaced."""
    if not 0.0 <= close_distractors <= 1.0:
        raise ValueError(f"close_distractors must be a probability in [0, 1], got {close_distractors!r}")
    if not 0.0 <= wrong_text <= 1.0:
        raise ValueError(f"wrong_text must be a probability in [0, 1], got {wrong_text!r}")
    H, W = sizes[int(rng.integers(len(sizes)))]
    limit_h, limit_w = (H - 2) / _MAX_SCALE, (W - 2) / _MAX_SCALE
    h = float(np.clip(rng.uniform(0.12, 0.32) * H, 6, limit_h))
    w = float(np.clip(h * np.exp(rng.uniform(np.log(0.5), np.log(2.0))), 6, limit_w))
    seq = synthetic_sequence(
        num_frames, (H, W), (int(h), int(w)), seed=int(rng.integers(2**31)),
        occlusion=bool(rng.random() < 0.25), scale_change=bool(rng.random() < 0.35),
        background=BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))],
        distractors=int(rng.integers(1, 3)) if rng.random() < 0.4 else 0,
        speed=float(rng.uniform(0.3, 2.0)),
        close_distractors=int(close_distractors > 0 and rng.random() < close_distractors))
    if name is not None:
        seq.name = name
    if wrong_text > 0:
        # the generator synthetic_sequence described the target with: same template and noun
        seed = seq.meta["seed"]
        seq.text = describe_target(seq.meta["sprite"], (H, W),
                                   rng=np.random.default_rng([seed, _TEXT_TAG]), wrong=wrong_text)
    return seq


def synthetic_split(split: str, num: int | None = None, num_frames: int | None = None,
                    start: int = 0) -> list[Sequence]:
    """Sequences `start` .. `start + num - 1` of a named split, each drawn by
    `random_synthetic_sequence` from its own seed stream (split tag, index), named
    "<split>-<index>". Defaults: "test" 12 sequences of 60 frames (the held-out set), "val" 6
    of 40, "train" 64 of 40. The same arguments always give the same sequences.

    ``text`` describes the target: right in "train"; in "val" and "test" drawn anew from
    ``default_rng([split tag, index, 7])`` and wrong in one attribute with probability
    :data:`HELD_OUT_WRONG_TEXT` (0.2), independently of `num_frames` and `num`. The frames and
    boxes are those of the versions without text."""
    if split not in _SPLIT_TAGS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_TAGS)}, got {split!r}")
    default_num, default_frames = {"test": (12, 60), "val": (6, 40), "train": (64, 40)}[split]
    num = default_num if num is None else int(num)
    num_frames = default_frames if num_frames is None else int(num_frames)
    if num < 1 or num_frames < 2 or start < 0:
        raise ValueError(f"num must be >= 1, num_frames >= 2 and start >= 0, got {num}, "
                         f"{num_frames}, {start}")
    tag = _SPLIT_TAGS[split]
    seqs = []
    for i in range(start, start + num):
        seq = random_synthetic_sequence(np.random.default_rng([tag, i]), num_frames,
                                        SPLIT_SIZES[split], name=f"{split}-{i:03d}")
        if split != "train":
            seq.text = describe_target(seq.meta["sprite"], seq.meta["background"].shape[:2],
                                       rng=np.random.default_rng([tag, i, _TEXT_TAG]),
                                       wrong=HELD_OUT_WRONG_TEXT)
        seqs.append(seq)
    return seqs
