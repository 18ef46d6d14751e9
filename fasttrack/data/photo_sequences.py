"""Tracking sequences made of real photographs, with exact boxes: a photographed object (a
cut-out with its own alpha mask, fasttrack.data.photos) moves over a background photograph
while the camera pans.

What varies (each drawn per sequence by `random_photo_sequence`):
- motion: a smooth path (two sinusoids per axis, speed 0.3-2.0 as in the synthetic generator),
  with probability 0.2 one or two abrupt jumps of 0.5-1.5 object sizes;
- camera: with probability 0.7 the view pans over a background 1.3-1.6x larger than the frame;
- the object: scale change (40 %), aspect change (30 %), in-plane rotation up to 25 degrees
  (30 %), a horizontal flip, soft edges (its alpha blurred by 0.7 px);
- look-alikes (35 %): another object of the same category (or the same object, flipped and
  recoloured, where the split has no other) on its own path, drawn under the target;
- partial occlusion (25 %): a crop of another photograph slides across the target around the
  middle of the sequence, drawn over it and covering at most about half of it;
- light: brightness and per-channel colour gains that drift over the sequence (50 %);
- motion blur (30 %): frames blurred along the target's motion by its displacement (at most 7
  px);
- `grey=True` turns every frame into three equal luminance channels (ITU-R 601).

Boxes: the ground truth of frame i is the bounding box of the pixels where the object's own
alpha (after resizing and rotation) is at least one half (half its peak, for a thin object
shrunk to a few pixels whose alpha never reaches it), the full object even where the occluder
covers it, clipped to the frame. The path keeps the object's centre at least a
quarter of its size inside the frame.

Splits (`photo_split`): sequence i of split s is drawn from default_rng([tag(s), i]) using
only the photographs of split s (the fixed photo split of fasttrack.data.photos) and the frame
sizes of the synthetic split of the same name, so no test photograph or test frame size is
ever seen in training. Defaults: "test" 12 sequences of 50 frames, "val" 8 of 40.
"""
from __future__ import annotations

import numpy as np

from .sequences import Sequence
from .synthetic import SPLIT_SIZES
from .text import describe_target

__all__ = ["photo_sequence_from", "random_photo_sequence", "photo_split", "PHOTO_SPLIT_DEFAULTS"]

_SPLIT_TAGS = {"train": 111, "val": 222, "test": 333}
PHOTO_SPLIT_DEFAULTS = {"test": (12, 50), "val": (8, 40), "train": (64, 40)}
_LUMA = np.array([0.299, 0.587, 0.114])


def _smooth(rng, n: int, amp: float, speed: float) -> np.ndarray:
    """(n,) smooth offsets in [-amp, amp]: two sinusoids of random phase, frequencies ~speed."""
    t = np.arange(n) / max(n - 1, 1)
    f1, f2 = rng.uniform(0.4, 1.1, 2) * speed
    w = rng.uniform(0.55, 0.85)
    v = (w * np.sin(2 * np.pi * f1 * t + rng.uniform(0, 2 * np.pi))
         + (1 - w) * np.sin(2 * np.pi * f2 * t + rng.uniform(0, 2 * np.pi)))
    return amp * v


def _warp(obj, w: int, h: int, angle: float, flip: bool):
    """The RGBA object resized to (w, h), flipped, rotated by `angle` degrees (canvas grown to
    fit) and its alpha softened: (h', w', 4) float array in [0, 1]."""
    from PIL import Image, ImageFilter

    im = Image.fromarray(obj, "RGBA")
    if flip:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    im = im.resize((max(w, 1), max(h, 1)), Image.BILINEAR)
    if abs(angle) > 0.5:
        im = im.rotate(angle, resample=Image.BICUBIC, expand=True)
    r, g, b, a = im.split()
    a = a.filter(ImageFilter.GaussianBlur(0.7))
    return np.asarray(Image.merge("RGBA", (r, g, b, a)), dtype=np.float32) / 255.0


def _paste(frame: np.ndarray, patch: np.ndarray, x: int, y: int, alpha=None):
    """Alpha-blend `patch` ((h, w, 4) float) into `frame` ((H, W, 3) float) with its top-left
    corner at (x, y); parts outside the frame are dropped."""
    H, W = frame.shape[:2]
    h, w = patch.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x0 >= x1 or y0 >= y1:
        return
    p = patch[y0 - y:y1 - y, x0 - x:x1 - x]
    a = p[..., 3:4] if alpha is None else alpha[y0 - y:y1 - y, x0 - x:x1 - x, None]
    region = frame[y0:y1, x0:x1]
    region *= 1 - a
    region += a * p[..., :3]


def _soft_rect(img: np.ndarray, feather: float = 2.0) -> np.ndarray:
    """(h, w, 4) float: an RGB crop with an alpha that falls to 0 over `feather` px at its edges."""
    h, w = img.shape[:2]
    ry = np.clip((np.minimum(np.arange(h), np.arange(h)[::-1]) + 0.5) / feather, 0, 1)
    rx = np.clip((np.minimum(np.arange(w), np.arange(w)[::-1]) + 0.5) / feather, 0, 1)
    return np.concatenate([img.astype(np.float32) / 255.0, (ry[:, None] * rx[None])[..., None]], -1)


def _motion_blur(frame: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """The frame averaged over integer shifts along (dx, dy) (its length capped at 7 px)."""
    length = float(np.hypot(dx, dy))
    steps = int(min(round(length), 7))
    if steps < 2:
        return frame
    ux, uy = dx / length, dy / length
    acc = np.zeros_like(frame)
    for k in range(steps):
        s = k - (steps - 1) / 2
        acc += np.roll(frame, (int(round(s * uy)), int(round(s * ux))), axis=(0, 1))
    return acc / steps


def _flat_rgb(obj: np.ndarray) -> np.ndarray:
    """The object's colours with its transparent pixels set to its mean opaque colour (for the
    description's colour words)."""
    rgb = obj[..., :3].astype(np.float64)
    mask = obj[..., 3] >= 128
    mean = rgb[mask].mean(0) if mask.any() else rgb.reshape(-1, 3).mean(0)
    return np.where(mask[..., None], rgb, mean).round().astype(np.uint8)


def photo_sequence_from(rng: np.random.Generator, objects: list, backgrounds: list,
                        num_frames: int = 40, size=(128, 160), name: str = "photo",
                        grey: bool = False) -> Sequence:
    """One sequence with every condition drawn from `rng` (module docstring).

    Args:
        rng: numpy Generator; the same state gives the same sequence.
        objects: [((h, w, 4) uint8 RGBA, category)] to draw the target and look-alikes from.
        backgrounds: [(H, W, 3) uint8] background and occluder photographs.
        num_frames: N >= 2; size: (H, W) of the frames, each >= 32.
        grey: three equal luminance channels instead of colour (the same draws otherwise).
    Returns:
        Sequence with frames (N, H, W, 3) uint8, gt (N, 4) float32 [x, y, w, h], text (a
        description of the target) and meta ("category", "lookalike", "occluded", "jumps",
        "pan", "blur", "light").
    """
    H, W = (int(v) for v in size)
    if H < 32 or W < 32 or int(num_frames) < 2:
        raise ValueError(f"size must be at least 32x32 and num_frames >= 2, got {size}, {num_frames}")
    if not objects or not backgrounds:
        raise ValueError("photo sequences need at least one object and one background")
    n = int(num_frames)
    oi = int(rng.integers(len(objects)))
    obj, category = objects[oi]
    bg = backgrounds[int(rng.integers(len(backgrounds)))]

    # background world and camera
    from PIL import Image

    zoom = rng.uniform(1.3, 1.6)
    bh, bw = bg.shape[:2]
    s = max(zoom * H / bh, zoom * W / bw)
    world = np.asarray(Image.fromarray(bg).resize((max(W + 1, round(bw * s)), max(H + 1, round(bh * s))),
                                                  Image.BILINEAR), dtype=np.float32) / 255.0
    if rng.random() < 0.5:
        world = world[:, ::-1]
    Hw, Ww = world.shape[:2]
    pan = bool(rng.random() < 0.7)
    speed = float(rng.uniform(0.3, 2.0))
    if pan:
        camx = (Ww - W) / 2 + _smooth(rng, n, (Ww - W) / 2 * 0.95, speed * 0.5)
        camy = (Hh := (Hw - H)) / 2 + _smooth(rng, n, Hh / 2 * 0.95, speed * 0.5)
    else:
        camx = np.full(n, rng.uniform(0, Ww - W))
        camy = np.full(n, rng.uniform(0, Hw - H))
    camx, camy = np.clip(np.rint(camx), 0, Ww - W).astype(int), np.clip(np.rint(camy), 0, Hw - H).astype(int)

    # target size: its bounding box's side sqrt(w h) is 12-30 % of the frame's
    oh, ow = obj.shape[:2]
    side = rng.uniform(0.12, 0.30) * np.sqrt(H * W)
    base = side / np.sqrt(oh * ow)
    t = np.arange(n)
    scale = np.exp(_smooth(rng, n, rng.uniform(0.15, 0.35), 1.0)) if rng.random() < 0.4 else np.ones(n)
    aspect = np.exp(_smooth(rng, n, rng.uniform(0.1, 0.25), 1.0)) if rng.random() < 0.3 else np.ones(n)
    angle = _smooth(rng, n, rng.uniform(5, 25), 1.0) if rng.random() < 0.3 else np.zeros(n)
    flip = bool(rng.random() < 0.5)
    ws = np.maximum(np.rint(ow * base * scale * np.sqrt(aspect)), 4).astype(int)
    hs = np.maximum(np.rint(oh * base * scale / np.sqrt(aspect)), 4).astype(int)

    # centre path in frame coordinates, kept inside with a margin of a quarter of the size
    big = float(np.sqrt(ws.max() * hs.max()))
    cx = W / 2 + _smooth(rng, n, max(W / 2 - big / 2, 1.0), speed)
    cy = H / 2 + _smooth(rng, n, max(H / 2 - big / 2, 1.0), speed)
    jumps = []
    if rng.random() < 0.2:
        for _ in range(int(rng.integers(1, 3))):
            at = int(rng.integers(max(n // 4, 1), n))
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(0.5, 1.5) * big
            cx[at:] += dist * np.cos(ang)
            cy[at:] += dist * np.sin(ang)
            jumps.append(at)
    cx = np.clip(cx, ws / 4, W - ws / 4)
    cy = np.clip(cy, hs / 4, H - hs / 4)

    # look-alike: same category when the split has another such object
    look = None
    if rng.random() < 0.35:
        same = [i for i, (_, c) in enumerate(objects) if c == category and i != oi]
        if same:
            lobj = objects[same[int(rng.integers(len(same)))]][0]
            lflip = bool(rng.random() < 0.5)
        else:
            gains = rng.uniform(0.8, 1.2, 3)
            lobj = obj.copy()
            lobj[..., :3] = np.clip(lobj[..., :3] * gains, 0, 255).astype(np.uint8)
            lflip = not flip
        lside = side * rng.uniform(0.8, 1.2)
        lbase = lside / np.sqrt(lobj.shape[0] * lobj.shape[1])
        lw, lh = max(int(round(lobj.shape[1] * lbase)), 4), max(int(round(lobj.shape[0] * lbase)), 4)
        # its path swings across the target's: the case trackers confuse most
        amp = rng.uniform(0.8, 2.0) * big
        swing = _smooth(rng, n, 1.0, speed)
        ang = rng.uniform(0, 2 * np.pi)
        lx = np.clip(cx + amp * swing * np.cos(ang), lw / 2, W - lw / 2)
        ly = np.clip(cy + amp * swing * np.sin(ang), lh / 2, H - lh / 2)
        look = (_warp(lobj, lw, lh, 0.0, lflip), lx, ly)

    # occluder: a crop of another photograph crossing the target around the middle
    occ = None
    if rng.random() < 0.25:
        src = backgrounds[int(rng.integers(len(backgrounds)))]
        oh2 = int(min(max(hs.max() * rng.uniform(0.8, 1.6), 6), src.shape[0] - 1, H))
        ow2 = int(min(max(ws.max() * rng.uniform(0.35, 0.6), 4), src.shape[1] - 1, W))
        y0 = int(rng.integers(src.shape[0] - oh2))
        x0 = int(rng.integers(src.shape[1] - ow2))
        patch = _soft_rect(src[y0:y0 + oh2, x0:x0 + ow2])
        mid = int(rng.integers(n // 3, max(2 * n // 3, n // 3 + 1)))
        sweep = rng.uniform(1.0, 2.5) * W / n * np.sign(rng.random() - 0.5)
        ox = cx[mid] + sweep * (t - mid)
        oy = np.full(n, cy[mid] + rng.uniform(-0.3, 0.3) * hs[mid])
        occ = (patch, ox, oy)

    light = rng.random() < 0.5
    if light:
        bright = 1 + _smooth(rng, n, rng.uniform(0.1, 0.3), 1.0)
        tint = 1 + np.stack([_smooth(rng, n, rng.uniform(0.02, 0.1), 1.0) for _ in range(3)], 1)
    blur = rng.random() < 0.3

    frames = np.empty((n, H, W, 3), np.uint8)
    gt = np.empty((n, 4), np.float32)
    for i in range(n):
        frame = world[camy[i]:camy[i] + H, camx[i]:camx[i] + W].copy()
        if look is not None:
            lp, lx, ly = look
            _paste(frame, lp, int(round(lx[i] - lp.shape[1] / 2)), int(round(ly[i] - lp.shape[0] / 2)))
        patch = _warp(obj, int(ws[i]), int(hs[i]), float(angle[i]), flip)
        x = int(round(cx[i] - patch.shape[1] / 2))
        y = int(round(cy[i] - patch.shape[0] / 2))
        _paste(frame, patch, x, y)
        # (a thin object shrunk to a few pixels may never reach alpha 0.5: then half its peak)
        alpha = patch[..., 3]
        solid = alpha >= 0.5 * min(float(alpha.max()), 1.0) if alpha.max() > 0 else alpha >= 0
        rows, cols = np.flatnonzero(solid.any(1)), np.flatnonzero(solid.any(0))
        bx0, bx1 = np.clip([x + cols[0], x + cols[-1] + 1], 0, W)
        by0, by1 = np.clip([y + rows[0], y + rows[-1] + 1], 0, H)
        gt[i] = (bx0, by0, bx1 - bx0, by1 - by0)
        if occ is not None:
            op, ox, oy = occ
            _paste(frame, op, int(round(ox[i] - op.shape[1] / 2)), int(round(oy[i] - op.shape[0] / 2)))
        if light:
            frame = frame * (bright[i] * tint[i])
        if blur and i > 0:
            frame = _motion_blur(frame, cx[i] - cx[i - 1], cy[i] - cy[i - 1])
        if grey:
            frame = np.repeat((frame @ _LUMA)[..., None], 3, -1)
        frames[i] = np.clip(np.rint(frame * 255), 0, 255).astype(np.uint8)
    text = describe_target(_flat_rgb(obj), (H, W), rng=np.random.default_rng(rng.integers(2**31)))
    meta = {"category": category, "lookalike": look is not None, "occluded": occ is not None,
            "jumps": jumps, "pan": pan, "blur": bool(blur), "light": bool(light), "grey": grey}
    return Sequence(name, frames, gt, meta=meta, text=text)


def random_photo_sequence(rng: np.random.Generator, library, split: str = "train",
                          num_frames: int = 40, sizes=None, name: str | None = None,
                          grey: bool = False) -> Sequence:
    """A sequence of `split`'s photographs (a fasttrack.data.photos.PhotoLibrary) at a frame
    size drawn from `sizes` (default: the synthetic split's sizes)."""
    sizes = SPLIT_SIZES[split] if sizes is None else sizes
    size = sizes[int(rng.integers(len(sizes)))]
    return photo_sequence_from(rng, library.objects(split), library.backgrounds(split), num_frames,
                               size, name=name or f"photo-{split}", grey=grey)


def photo_split(split: str, num: int | None = None, num_frames: int | None = None,
                start: int = 0, library=None, grey: bool = False) -> list[Sequence]:
    """Sequences `start` .. `start + num - 1` of a named photo split ("train", "val", "test";
    module docstring), named "photo-<split>-<index>" ("-grey" appended with `grey`). The same
    arguments and photo library always give the same sequences. `library` defaults to
    ``PhotoLibrary.open()`` (PhotoLibraryError naming `fasttrack dataset photos` when absent)."""
    from .photos import PhotoLibrary

    if split not in _SPLIT_TAGS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_TAGS)}, got {split!r}")
    dn, df = PHOTO_SPLIT_DEFAULTS[split]
    num = dn if num is None else int(num)
    num_frames = df if num_frames is None else int(num_frames)
    if num < 1 or num_frames < 2 or start < 0:
        raise ValueError(f"num must be >= 1, num_frames >= 2 and start >= 0, got {num}, "
                         f"{num_frames}, {start}")
    library = PhotoLibrary.open() if library is None else library
    suffix = "-grey" if grey else ""
    return [random_photo_sequence(np.random.default_rng([_SPLIT_TAGS[split], i]), library, split,
                                  num_frames, name=f"photo-{split}-{i:03d}{suffix}", grey=grey)
            for i in range(start, start + num)]
