"""Search-region crops (fasttrack.trackers.diffusion.crops), the readout on crop windows, and
DINTR with `context` > 0: crops against independent samplers, window coordinates, injected maps
followed through the windows, patched == unpatched and batch == single runs."""
import math

import numpy as np
import pytest
import torch

from fasttrack.trackers.diffusion.boxes import box_masks
from fasttrack.trackers.diffusion.crops import (check_context, crop_images, crop_windows, from_window,
                                                to_window, window_side)
from fasttrack.trackers.diffusion.readout import BoxReader
from fasttrack.trackers.diffusion.sd import preprocess
from fasttrack.eval.metrics import iou


def _image(rng, H, W):
    return torch.randint(0, 256, (H, W, 3), generator=rng, dtype=torch.uint8).numpy()


def _bilinear(img: np.ndarray, x: float, y: float, fill: np.ndarray) -> np.ndarray:
    """Plain bilinear sample at continuous pixel coordinates (pixel i's centre at i + 1/2),
    `fill` outside the frame: the reference for upscaling crops."""
    H, W = img.shape[:2]
    u, v = x - 0.5, y - 0.5
    x0, y0 = math.floor(u), math.floor(v)
    out = np.zeros(3)
    for dy, wy in ((0, 1 - (v - y0)), (1, v - y0)):
        for dx, wx in ((0, 1 - (u - x0)), (1, u - x0)):
            yy, xx = y0 + dy, x0 + dx
            val = img[yy, xx].astype(np.float64) if 0 <= yy < H and 0 <= xx < W else fill
            out += wy * wx * val
    return out


def test_upscaling_crop_matches_bilinear_reference_with_mean_padding(rng):
    H, W, S = 37, 53, 24
    img = _image(rng, H, W)
    g = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=rng)))
    # a 19.3 px square (upscaled to 24) hanging over the top-left corner of the frame
    win = torch.tensor([[-4.7 + g.uniform(0, 1), -6.1, 19.3]])
    x = crop_images(img, win, S, "cpu", torch.float32)[0]
    mean = img.reshape(-1, 3).astype(np.float64).mean(0)
    side = float(win[0, 2])
    for i, j in [(0, 0), (3, 17), (23, 23), (11, 5), (20, 2)]:
        px, py = float(win[0, 0]) + (j + 0.5) * side / S, float(win[0, 1]) + (i + 0.5) * side / S
        ref = _bilinear(img, px, py, mean) / 127.5 - 1
        assert np.allclose(x[:, i, j].numpy(), ref, atol=1e-4), (i, j)


def test_whole_square_frame_window_equals_preprocess(rng):
    # a window that is exactly an H x H frame: antialiased downscale, then samples at the
    # resized pixels' own centres, i.e. sd.preprocess's input
    img = _image(rng, 90, 90)
    x = crop_images(img, torch.tensor([[0.0, 0.0, 90.0]]), 32, "cpu", torch.float32)
    assert torch.allclose(x, preprocess(img, 32, "cpu", torch.float32), atol=1e-4)


def test_windows_and_coordinates(rng):
    boxes = torch.rand(5, 4, generator=rng) * torch.tensor([100.0, 80.0, 40.0, 30.0]) + torch.tensor([0, 0, 3.0, 2.0])
    win = crop_windows(boxes, 3.5)
    side = torch.maximum(boxes[:, 2], boxes[:, 3]) * 3.5
    assert torch.allclose(win[:, 2], side.clamp_min(8.0))
    assert torch.allclose(win[:, :2] + win[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)  # centred
    inner = to_window(boxes, win, 256)
    assert torch.allclose(inner[:, :2] + inner[:, 2:] / 2, torch.full((5, 2), 128.0), atol=1e-4)
    assert torch.allclose(inner[:, 2:], boxes[:, 2:] * 256 / win[:, 2:], atol=1e-5)
    assert torch.allclose(from_window(inner, win, 256), boxes, atol=1e-4)
    assert torch.allclose(from_window(inner[:, :2], win, 256), boxes[:, :2], atol=1e-4)
    assert window_side((32, 24)) == 256
    assert check_context(0) == 0.0 and check_context(4) == 4.0
    for bad in (0.5, -1, float("inf"), float("nan"), True, "4"):
        with pytest.raises(ValueError, match="context"):
            check_context(bad)


def test_box_reader_reads_in_windows(rng):
    """A target's box mask drawn on its window's grid comes back as the target's image box,
    and a stronger same-looking blob inside the crop but outside the 3x search window is ignored."""
    grid = (32, 32)
    side = window_side(grid)
    g = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=rng)))
    w = g.uniform(16, 30)
    prev = torch.tensor([[g.uniform(20, 60), g.uniform(20, 60), w, w * g.uniform(0.8, 1.25)]],
                        dtype=torch.float32)
    now = prev + torch.tensor([[g.uniform(-4, 4), g.uniform(-4, 4), 0, 0]], dtype=torch.float32)
    win = crop_windows(prev, 8.0)
    inner = to_window(now, win, side)
    other = inner.clone()
    # left edge one cell past the search window's right edge (prev centre + 1.5 widths)
    other[:, 0] = side / 2 + 1.5 * to_window(prev, win, side)[:, 2] + side / grid[1]
    assert float(other[0, 0] + other[0, 2]) < side        # inside the crop
    maps = box_masks(inner, (side, side), grid) + 1.5 * box_masks(other, (side, side), grid)
    reader = BoxReader(threshold=0.5, search=3.0, scale_step=float("inf"))
    reader.start(prev)
    r = reader.read(maps, (120, 160), win)
    # Each edge within a quarter cell of the truth: the reader's edges are where the bilinearly
    # upsampled coverage fractions cross 0.5 (at most ~0.09 cell from the true edge) on a grid
    # of 8 virtual pixels per cell (at most 1/8 cell more). An IoU bound is not implied by
    # that: a box 3-4 cells wide loses up to ~13% IoU to such errors (0.868 seen over 2000
    # seeds; the largest edge error there was 0.148 cell).
    cell = float(win[0, 2]) / grid[1]
    got, want = r.boxes[0], now[0]
    edges = torch.stack([got[0] - want[0], got[1] - want[1], got[0] + got[2] - want[0] - want[2],
                         got[1] + got[3] - want[1] - want[3]])
    assert float(edges.abs().max()) <= 0.25 * cell, (edges / cell).tolist()
    # the peak cell (any of the box's full cells) in image pixels: inside the target's box
    assert bool(((r.points >= now[:, :2]) & (r.points <= now[:, :2] + now[:, 2:])).all())
    assert torch.equal(reader.boxes, r.boxes)


# ------------------------------------------------------------------ DINTR on crops
pytest.importorskip("diffusers")
from fasttrack.trackers import DINTR  # noqa: E402
import fasttrack  # noqa: E402


def _moving_scene(rng, num_frames=6, size=(120, 160)):
    g = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=rng)))
    w, h = g.uniform(16, 24), g.uniform(14, 22)
    x, y, vx, vy = g.uniform(10, 30), g.uniform(10, 40), g.uniform(3, 5), g.uniform(-2, 2)
    boxes = np.array([[x + vx * k, y + vy * k, w, h] for k in range(num_frames)], np.float32)
    frames = [g.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(num_frames)]
    return frames, boxes


def test_dintr_follows_injected_maps_through_its_windows(rng, monkeypatch):
    """DINTR with context 4 and motion 0.5, its UNet maps replaced by the true box (plus a
    stronger copy 2.3 boxes to the right, inside the crop, outside the search window) drawn on
    the window it reads, centred on the readout's predicted box: next-frame IoU >= 0.9 on every
    frame."""
    frames, boxes = _moving_scene(rng)
    tr = DINTR.tiny(0, resolution=32, init_steps=0, reinject_steps=0, finetune_steps=0, context=4.0,
                    motion=0.5)
    side, calls = window_side((32, 32)), []

    def injected(z, tokens, labels=None):
        calls.append(len(calls) + 1)
        win = crop_windows(tr._reader.predicted, 4.0)       # the windows this frame was cropped at
        b = torch.as_tensor(boxes[calls[-1]])[None]
        copy = b.clone()
        copy[:, 0] += 2.3 * copy[:, 2]
        inner = box_masks(to_window(b, win, side), (side, side), (32, 32))
        return inner + 1.4 * box_masks(to_window(copy, win, side), (side, side), (32, 32))

    monkeypatch.setattr(tr, "_maps", injected)
    out, _ = tr.run(frames, boxes[0], progress=False)
    ious = iou(out[1:], boxes[1:])
    assert ious.min() >= 0.9, ious
    assert float(tr._reader.velocity[0, 0]) > 1.0          # the scene moves 3-5 px per frame to the right


def test_dintr_crops_patched_equals_unpatched_and_batch_equals_singles(rng):
    frames, boxes = _moving_scene(rng, num_frames=3)
    tr = DINTR.tiny(0, num_steps=2, init_steps=2, finetune_steps=1, reinject_steps=1, context=4.0,
                    normalize=False, motion=0.5)
    runs = {}
    for patched in (False, True):
        fasttrack.patch(tr, backend="torch") if patched else fasttrack.unpatch(tr)
        runs[patched] = tr.run(frames, boxes[0], progress=False)[0]
        assert np.isfinite(runs[patched]).all()
    assert np.all(iou(runs[True], runs[False]) >= 0.99)
    assert len(tr.finetune_losses) == 2                  # the fine-tuning ran on the crop pairs
    # K = 2: each target its own window; without fine-tuning (which sums over targets) the
    # batch is exactly the single runs
    single = DINTR.tiny(0, num_steps=2, init_steps=2, finetune_steps=0, reinject_steps=1, context=4.0,
                        motion=0.5)
    two = np.stack([boxes[0], boxes[0] + np.array([60, 50, 4, 0], np.float32)]).astype(np.float64)
    single.init_batch(frames[0], two)
    batch = np.stack([single.update_batch(f) for f in frames[1:]])
    for k in range(2):
        single.init(frames[0], two[k])
        alone = np.stack([single.update(f) for f in frames[1:]])
        assert np.all(iou(batch[:, k], alone) >= 0.99)


def test_dintr_context_settings():
    tr = DINTR.tiny(0, init_steps=0, context=3)
    assert tr.context == 3.0
    with pytest.raises(ValueError, match="mask"):
        DINTR(tr.sd, indication="mask", context=4.0)
    with pytest.raises(ValueError, match="context"):
        DINTR(tr.sd, context=0.5)
    with pytest.raises(ValueError, match="motion"):
        DINTR(tr.sd, context=3.0, motion=1.5)
    point = DINTR(tr.sd, indication="point", init_steps=1, num_steps=1, context=4.0)
    img = np.random.default_rng(0).integers(0, 256, (80, 96, 3), dtype=np.uint8)
    point.init(img, [30.0, 20.0, 16.0, 12.0])
    b = point.update(img)
    assert np.allclose(b[2:], [16.0, 12.0])                 # point tracking keeps the size
    assert np.allclose(b[:2] + b[2:] / 2, point.points[0].numpy(), atol=1e-4)  # image pixels
