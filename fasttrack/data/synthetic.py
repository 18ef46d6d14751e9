"""Synthetic tracking sequences with exact ground truth, in numpy (no device, no files).

A textured sprite moves along a smooth (Lissajous) path over a smooth textured background. The
sprite is pasted at integer pixel positions with an integer size, so its box [x, y, w, h] is exact:
the sprite covers exactly the pixels ``x <= col < x + w``, ``y <= row < y + h``.

Colour ranges keep the three layers apart, pixel by pixel: background channels lie in [40, 160];
every sprite pixel has one channel (the same for the whole sprite) in [200, 255]; the optional
occluder is dark (all channels in [0, 30]). So ``(frame != background).any(-1)`` is exactly the
union of the sprite box and the occluder bar.
"""

from __future__ import annotations

import numpy as np

from .sequences import Sequence

__all__ = ["synthetic_sequence"]

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


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 with all values in [40, 160]: smooth colour field plus fine noise."""
    field = np.stack([_smooth_field(rng, h, w) for _ in range(3)], axis=-1)
    img = 45 + 105 * field + rng.uniform(-5, 5, size=(h, w, 3))
    return np.clip(np.rint(img), 40, 160).astype(np.uint8)


def _sprite(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 checkerboard texture whose dominant channel is >= 200 everywhere."""
    cell = max(2, min(h, w) // 5)
    yy, xx = np.mgrid[0:h, 0:w]
    checker = ((yy // cell + xx // cell) % 2).astype(np.float64)
    grad = _smooth_field(rng, h, w, waves=2)
    img = np.empty((h, w, 3))
    dom = int(rng.integers(3))
    for c in range(3):
        lo, hi = (200, 255) if c == dom else (0, 120)
        a, b = rng.uniform(lo, hi, size=2)
        img[..., c] = a * checker + b * (1 - checker)
        img[..., c] = lo + (img[..., c] - lo) * (0.7 + 0.3 * grad)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _resize_nearest(img: np.ndarray, h: int, w: int) -> np.ndarray:
    rows = (np.arange(h) * img.shape[0]) // h
    cols = (np.arange(w) * img.shape[1]) // w
    return img[rows][:, cols]


def synthetic_sequence(num_frames: int = 30, size=(128, 160), sprite_size=(24, 32), seed: int = 0,
                       occlusion: bool = False, scale_change: bool = False) -> Sequence:
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
    Returns:
        Sequence named "synthetic-<seed>" whose frames are (H, W, 3) uint8 arrays and gt (N, 4)
        float32 exact boxes. meta holds "background" (H, W, 3) uint8, "sprite" (h, w, 3) uint8
        (texture at scale 1), "occluder" ((N, 4) float32 bar boxes clipped to the frame, w may be
        0 when the bar is outside, or None) and the arguments.
    """
    if int(num_frames) != num_frames or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    num_frames = int(num_frames)
    H, W = _pair(size, "size")
    h0, w0 = _pair(sprite_size, "sprite_size")
    if min(h0, w0) < 4 or h0 * _MAX_SCALE > H - 2 or w0 * _MAX_SCALE > W - 2:
        raise ValueError(f"sprite_size {(h0, w0)} must be >= 4 and at most size / 1.3 - 2 "
                         f"for size {(H, W)}")
    rng = np.random.default_rng(seed)
    background = _background(rng, H, W)
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
    ax, ay = 0.45 * (W - wmax), 0.45 * (H - hmax)
    fx, fy = rng.uniform(0.5, 1.2), rng.uniform(0.5, 1.2)
    px, py = rng.uniform(0, 2 * np.pi, size=2)
    cx = W / 2 + ax * np.sin(2 * np.pi * fx * t / max(num_frames, 2) + px)
    cy = H / 2 + ay * np.sin(2 * np.pi * fy * t / max(num_frames, 2) + py)
    xs = np.clip(np.rint(cx - ws / 2).astype(int), 0, W - ws)
    ys = np.clip(np.rint(cy - hs / 2).astype(int), 0, H - hs)

    occluder = None
    if occlusion:
        bw = max(2, w0 // 2)
        mid = num_frames // 2
        speed = W / max(num_frames, 2)
        left = np.rint(cx[mid] - bw / 2 + speed * (t - mid)).astype(int)
        x0, x1 = np.clip(left, 0, W), np.clip(left + bw, 0, W)
        occluder = np.stack([x0, np.zeros_like(x0), x1 - x0, np.full_like(x0, H)], 1)
        occluder = occluder.astype(np.float32)
        stripes = (10 + 15 * ((np.arange(H) // 4) % 2)).astype(np.uint8)[:, None, None]

    frames, gt = [], np.empty((num_frames, 4), dtype=np.float32)
    for i in range(num_frames):
        img = background.copy()
        x, y, h, w = int(xs[i]), int(ys[i]), int(hs[i]), int(ws[i])
        img[y:y + h, x:x + w] = sprite if (h, w) == (h0, w0) else _resize_nearest(sprite, h, w)
        if occluder is not None:
            a, b = int(occluder[i, 0]), int(occluder[i, 0] + occluder[i, 2])
            img[:, a:b] = stripes
        frames.append(img)
        gt[i] = (x, y, w, h)
    meta = {"background": background, "sprite": sprite, "occluder": occluder, "seed": seed,
            "occlusion": occlusion, "scale_change": scale_change}
    return Sequence(f"synthetic-{seed}", frames, gt, meta=meta)
