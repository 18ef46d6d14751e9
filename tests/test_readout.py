"""The diffusion trackers' box readout (fasttrack.trackers.diffusion.readout) and both trackers
reading boxes from injected maps.

Injected maps stand in for attention: each frame's map is the target's box mask (cell area
fractions) plus a same-looking distractor that responds *more strongly* than the target, plus
noise. A whole-frame readout (the papers' "every pixel >= 0.5") picks the distractor or unions
both; the readout must follow the target. The boxes are drawn fresh from the test's generator
at sizes and positions that do not align with the map grid.
"""
import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from fasttrack.eval.metrics import iou  # noqa: E402
from fasttrack.trackers.diffusion.boxes import box_masks  # noqa: E402
from fasttrack.trackers.diffusion.readout import BoxReader, read_boxes, search_window  # noqa: E402

GRID = (32, 32)


def _scene(rng, num_frames=7, size=(150, 240)):
    """Target and distractor boxes per frame (moving), frames of distinct random pixels."""
    H, W = size
    g = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=rng)))
    # Boxes of 30-40 px (4-8 map cells): a readout within a pixel or so on every edge keeps
    # IoU above 0.9.
    w, h = g.uniform(30, 40), g.uniform(28, 36)
    x, y = g.uniform(8, 16), g.uniform(10, 50)
    vx, vy = g.uniform(2, 3.5), g.uniform(-2, 2)
    boxes, dboxes = [], []
    for k in range(num_frames):
        b = [x + vx * k, y + vy * k, w, h]
        boxes.append(b)
        # The distractor keeps 3.3 box widths to the right of the target (outside a 3x window)
        # and moves with it; some frames it sits lower, some higher.
        dboxes.append([b[0] + 3.3 * w, min(max(b[1] + (-1) ** k * 6, 0), H - h - 1), w, h])
    frames = [g.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(num_frames)]
    return frames, np.array(boxes, np.float32), np.array(dboxes, np.float32), (H, W)


def _maps(box, dbox, size, noise_seed, grid=GRID):
    """(1, h, w): the target's box mask + 1.4 x the distractor's + uniform noise in [0, 0.05)
    (noise shifts the 0.5 level, and with it the box edges, by up to a twentieth of a cell)."""
    t = box_masks(torch.tensor(box)[None], size, grid)
    return _with_distractor(t, dbox, size, noise_seed, grid)


def _core(box, fw, fh):
    """The box's central fw x fh part: a map that covers only part of its target."""
    x, y, w, h = (float(v) for v in box)
    return [x + w * (1 - fw) / 2, y + h * (1 - fh) / 2, w * fw, h * fh]


def _with_distractor(t, dbox, size, noise_seed, grid=GRID):
    d = box_masks(torch.tensor(dbox)[None], size, grid)
    gen = torch.Generator().manual_seed(noise_seed)
    return t + 1.4 * d + 0.05 * torch.rand(t.shape, generator=gen)


def test_readout_follows_target_not_stronger_distractor(rng):
    frames, boxes, dboxes, size = _scene(rng)
    prev = torch.tensor(boxes[0])[None]
    got = []
    for k in range(1, len(boxes)):
        r = read_boxes(_maps(boxes[k], dboxes[k], size, k), prev, size)
        prev = r.boxes
        got.append(r.boxes[0].numpy())
        assert 0.0 < float(r.scores[0]) < 1.0   # the distractor outshines the target
        assert r.masks.shape == (1, *size) and r.masks[0].any()
        cx, cy = boxes[k, 0] + boxes[k, 2] / 2, boxes[k, 1] + boxes[k, 3] / 2
        assert abs(float(r.points[0, 0]) - cx) < boxes[k, 2] / 2
        assert abs(float(r.points[0, 1]) - cy) < boxes[k, 3] / 2
    assert iou(np.array(got), boxes[1:]).min() >= 0.9
    # The whole frame (no locality prior) reads the distractor: what the window prevents.
    r = read_boxes(_maps(boxes[1], dboxes[1], size, 1), torch.tensor(boxes[0])[None], size,
                   search=float("inf"))
    assert iou(r.boxes.numpy(), boxes[1:2])[0] < 0.2


def test_readout_takes_the_peaks_region_only(rng):
    """Two blobs inside the window: the box covers the peak's connected region, not both."""
    size = (96, 128)
    a = torch.tensor([[30.0, 30.0, 20.0, 16.0]])
    b = torch.tensor([[62.0, 33.0, 14.0, 12.0]])        # 12 px gap: both inside a 3x window
    m = box_masks(a, size, GRID) + 0.8 * box_masks(b, size, GRID)
    r = read_boxes(m, a + torch.tensor([[6.0, 0.0, 0.0, 0.0]]), size)
    assert iou(r.boxes.numpy(), a.numpy())[0] >= 0.9
    # The blobs' strengths swapped (and a window wide enough for all of b): the box moves to b.
    r = read_boxes(0.8 * box_masks(a, size, GRID) + box_masks(b, size, GRID), a, size, search=5.0)
    assert iou(r.boxes.numpy(), b.numpy())[0] >= 0.9


def test_readout_batch_equals_single_and_constant_map_keeps_box(rng):
    size = (120, 150)
    boxes = torch.tensor([[20.0, 30.0, 25.0, 20.0], [90.0, 60.0, 30.0, 28.0]])
    m = box_masks(boxes + 2.0, size, GRID) + 0.05 * torch.rand((2, *GRID), generator=rng)
    m = torch.cat([m, torch.full((1, *GRID), 0.3)])      # a constant map: nothing to read
    prev = torch.cat([boxes, torch.tensor([[5.0, 6.0, 7.0, 8.0]])])
    r = read_boxes(m, prev, size)
    for k in range(3):
        one = read_boxes(m[k:k + 1], prev[k:k + 1], size)
        assert torch.equal(one.boxes[0], r.boxes[k]) and torch.equal(one.masks[0], r.masks[k])
    assert torch.equal(r.boxes[2], prev[2]) and float(r.scores[2]) == 0.0
    assert r.found.tolist() == [True, True, False] and not r.masks[2].any()
    assert torch.equal(r.points[2], prev[2, :2] + prev[2, 2:] / 2)     # the point stays put
    # A threshold of 1 keeps the peak cell: the bilinear map never reaches 1 between centres.
    one = read_boxes(m[:2], prev[:2], size, threshold=1.0, scale_step=float("inf"))
    assert one.found.all() and (one.boxes[:, 2:] > 0).all()
    assert iou(r.boxes[:2].numpy(), (boxes + 2.0).numpy()).min() >= 0.9


def test_search_window_cells():
    w = search_window(torch.tensor([[40.0, 20.0, 10.0, 10.0]]), (100, 100), (10, 10), 3.0)
    # centre (45, 25), half-size 15: cell centres 5, 15, ..., 95 within 30..60 and 10..40
    want = torch.zeros(10, 10, dtype=torch.bool)
    want[1:4, 3:6] = True
    assert torch.equal(w[0], want)


def test_readout_rejects_bad_inputs():
    m = torch.rand(2, 8, 8)
    prev = torch.tensor([[1.0, 1.0, 4.0, 4.0]] * 2)
    with pytest.raises(ValueError, match="maps must be"):
        read_boxes(m[0], prev, (32, 32))
    with pytest.raises(ValueError, match="prev_boxes must be"):
        read_boxes(m, prev[:1], (32, 32))
    with pytest.raises(ValueError, match="threshold"):
        read_boxes(m, prev, (32, 32), threshold=0.0)
    with pytest.raises(ValueError, match="search"):
        read_boxes(m, prev, (32, 32), search=-1.0)
    with pytest.raises(ValueError, match="scale_step"):
        read_boxes(m, prev, (32, 32), scale_step=0.9)


# --------------------------------------------------------------------- BoxReader: the size model
def test_box_reader_calibrates_to_a_partial_map(rng):
    """Maps that cover only the central 65% x 75% of the target: the calibrated reader learns
    the ratio on the first read and keeps IoU >= 0.8 (a region edge is good to a fraction of a
    cell and the ratio scales its error: 0.83 at worst over 150 scenes); the region box alone
    shrinks onto the core (IoU 0.56 at best)."""
    frames, boxes, dboxes, size = _scene(rng, num_frames=9)
    reader, plain = BoxReader(0.5, calibrate=True), BoxReader(0.5)
    reader.start(torch.tensor(boxes[:1]))
    plain.start(torch.tensor(boxes[:1]))
    for k in range(1, len(boxes)):
        m = _with_distractor(box_masks(torch.tensor(_core(boxes[k], 0.65, 0.75))[None], size, GRID),
                             dboxes[k], size, k)
        got, base = reader.read(m, size), plain.read(m, size)
        assert torch.equal(got.boxes, reader.boxes)
        assert iou(got.boxes.numpy(), boxes[k:k + 1])[0] >= 0.8, k
    assert iou(base.boxes.numpy(), boxes[-1:])[0] < 0.62         # without calibration: the core only


def test_box_reader_bounds_and_smooths_the_size(rng):
    """Size = prev^(1 - size_lr) x (ratio x region size, bounded to prev / s .. prev x s), centred
    on the region box; checked against read_boxes' region box on random maps."""
    K, size = 3, (90, 120)
    prev = torch.tensor([[30.0, 20.0, 20.0, 16.0], [50.0, 40.0, 10.0, 30.0], [5.0, 5.0, 40.0, 40.0]])
    reader = BoxReader(0.4, search=2.5, scale_step=1.2, size_lr=0.3)
    reader.start(prev)
    m = torch.rand(K, 12, 16, generator=rng)
    got = reader.read(m, size)
    region = read_boxes(m, prev, size, threshold=0.4, search=2.5).boxes
    bounded = region[:, 2:].clamp_min(1.0).clamp(prev[:, 2:] / 1.2, prev[:, 2:] * 1.2)
    wh = prev[:, 2:] ** 0.7 * bounded ** 0.3
    centre = region[:, :2] + region[:, 2:] / 2
    assert torch.allclose(got.boxes, torch.cat([centre - wh / 2, wh], 1), rtol=1e-5, atol=1e-4)


def test_box_reader_nothing_found_keeps_box_and_waits_to_calibrate(rng):
    prev = torch.tensor([[10.0, 12.0, 20.0, 18.0]])
    reader = BoxReader(0.5, calibrate=True)
    reader.start(prev)
    flat = reader.read(torch.ones(1, 8, 8), (64, 64))
    assert not flat.found.any() and torch.equal(flat.boxes, prev) and torch.equal(reader.boxes, prev)
    m = box_masks(torch.tensor([[14.0, 16.0, 8.0, 6.0]]), (64, 64), (8, 8))
    first = reader.read(m, (64, 64))               # the first read calibrates: the size stays
    assert first.found.all()
    assert torch.allclose(first.boxes[0, 2:], prev[0, 2:])
    region = read_boxes(m, prev, (64, 64), threshold=0.5).boxes
    centre = first.boxes[:, :2] + first.boxes[:, 2:] / 2
    assert torch.allclose(centre, region[:, :2] + region[:, 2:] / 2, atol=1e-4)   # the region's centre
    # ... which is the target's (18, 19) up to the interpolated edges: 1 px is an eighth of a cell
    assert torch.allclose(centre[0], torch.tensor([18.0, 19.0]), atol=1.0)
    again = reader.read(m, (64, 64))               # same region, calibrated: same size
    assert torch.allclose(again.boxes, first.boxes, atol=1e-4)


def test_box_reader_motion_follows_a_fast_target_past_a_trailing_copy(rng):
    """A target moving 0.9 widths per frame, and from frame 3 on a stronger copy trailing it by
    2.8 widths: the previous box's 4x window holds the copy, the predicted one does not. With
    motion 1 the reader follows the target (IoU >= 0.9 every frame) and its velocity is the
    exponential average of its own centre steps; without motion it jumps onto the copy."""
    g = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=rng)))
    size, grid = (120, 400), (30, 100)                 # 4 px cells, boxes of 7-9 cells
    w, h = g.uniform(30, 36), g.uniform(28, 36)
    vx, vy = 0.9 * w, g.uniform(-1.5, 1.5)
    x0, y0 = g.uniform(3, 7), g.uniform(20, 50)
    boxes = np.array([[x0 + vx * k, y0 + vy * k, w, h] for k in range(9)], np.float32)
    ious = {}
    for a in (1.0, 0.5, 0.0):
        reader = BoxReader(0.5, search=4.0, scale_step=float("inf"), motion=a)
        reader.start(torch.tensor(boxes[:1]))
        v, last, got = np.zeros(2), boxes[0], []
        for k in range(1, len(boxes)):
            b = torch.tensor(boxes[k:k + 1])
            m = box_masks(b, size, grid)
            if k >= 3:
                copy = b.clone()
                copy[:, 0] -= 2.8 * w
                m = m + 1.5 * box_masks(copy, size, grid)
            r = reader.read(m, size)
            new = r.boxes[0].numpy()
            v = (1 - a) * v + a * ((new[:2] + new[2:] / 2) - (last[:2] + last[2:] / 2))
            last = new
            assert np.allclose(reader.velocity[0].numpy(), v, atol=1e-4)
            assert np.allclose(reader.predicted[0].numpy(), np.r_[new[:2] + v, new[2:]], atol=1e-4)
            got.append(new)
        ious[a] = iou(np.stack(got), boxes[1:])
    assert ious[1.0].min() >= 0.9, ious[1.0]
    assert ious[0.0].min() < 0.3, ious[0.0]           # the plain window's peak is the copy


def test_box_reader_prediction_stays_in_the_image():
    """A target running into the right edge: the raw prediction c + v (about 70 px) would leave
    the 64 px image; the predicted centre is held at the edge and the velocity shortened."""
    reader = BoxReader(0.5, scale_step=float("inf"), motion=1.0)
    reader.start(torch.tensor([[30.0, 20.0, 16.0, 16.0]]))
    r = reader.read(box_masks(torch.tensor([[46.0, 20.0, 16.0, 16.0]]), (64, 64), (16, 16)), (64, 64))
    centre = r.boxes[0, :2] + r.boxes[0, 2:] / 2
    assert 50.0 < float(centre[0]) < 58.0                     # the read moved ~16 px right
    pred = reader.predicted[0]
    assert abs(float(pred[0] + pred[2] / 2) - 64.0) < 1e-4
    # x: shortened to reach the edge; y: the plain step (motion 1), the start's centre y is 28
    assert abs(float(reader.velocity[0, 0]) - (64.0 - float(centre[0]))) < 1e-4
    assert abs(float(reader.velocity[0, 1]) - (float(centre[1]) - 28.0)) < 1e-4


def test_box_reader_rejects_bad_settings_and_use():
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="size_lr"):
            BoxReader(size_lr=bad)
    for bad in (-0.1, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ValueError, match="motion"):
            BoxReader(motion=bad)
    with pytest.raises(RuntimeError, match="start"):
        BoxReader().predicted
    with pytest.raises(ValueError, match="scale_step"):
        BoxReader(scale_step=0.5)
    with pytest.raises(RuntimeError, match="start"):
        BoxReader().read(torch.rand(1, 4, 4), (16, 16))


# --------------------------------------------------------------------- both trackers, injected maps
def _nearest_frame(z, latents):
    d = torch.stack([(z[:1].float() - l.float()).pow(2).sum() for l in latents])
    return int(d.argmin())


def _injected_tracker(which, frames, monkeypatch, map_of_frame, **settings):
    """A tiny tracker whose UNet maps are replaced by `map_of_frame(k)`, k the frame whose
    latents it reads them at. Returns it and the list the frame index of every readout goes to."""
    from fasttrack.trackers import DINTR, DiffTracker
    from fasttrack.trackers.diffusion.sd import preprocess

    if which == "diff_tracker":
        tr = DiffTracker.tiny(0, resolution=GRID[0], prompt_steps=0, use_updater=False, **settings)
    else:
        tr = DINTR.tiny(0, resolution=GRID[0], init_steps=0, reinject_steps=0, finetune_steps=0,
                        **settings)
    with torch.no_grad():
        latents = [tr.sd.encode(preprocess(f, tr.sd.image_size, "cpu", torch.float32)) for f in frames]
    calls = []

    def injected(z):
        calls.append(_nearest_frame(z, latents))
        return map_of_frame(calls[-1])

    if which == "diff_tracker":
        orig = tr._forward

        def forward(z, prompt):
            maps, pred, noise = orig(z, prompt)
            return injected(z).expand_as(maps), pred, noise

        monkeypatch.setattr(tr, "_forward", forward)
    else:
        monkeypatch.setattr(tr, "_maps", lambda z, tokens, labels=None: injected(z))
    return tr, calls


@pytest.mark.parametrize("which", ["diff_tracker", "dintr"])
def test_trackers_follow_target_with_injected_maps(which, rng, monkeypatch):
    """Each tracker, its UNet maps replaced by the scene's injected maps of the frame whose
    latents the tracker reads them at, follows the target to next-frame IoU >= 0.9 per frame.
    DINTR must read at the next frame's latents: maps averaged along the interpolation path
    would mix the two frames (here: the nearest frame along the path wins half the calls)."""
    frames, boxes, dboxes, size = _scene(rng)
    tr, calls = _injected_tracker(which, frames, monkeypatch, lambda k: _maps(boxes[k], dboxes[k], size, k))
    out, _ = tr.run(frames, boxes[0], progress=False)
    ious = iou(out[1:], boxes[1:])
    assert ious.min() >= 0.9, ious
    if which == "dintr":
        assert calls == list(range(1, len(frames)))   # one readout per frame, at z_{k+1}


@pytest.mark.parametrize("which", ["diff_tracker", "dintr"])
def test_trackers_calibrate_size_with_partial_maps(which, rng, monkeypatch):
    """Maps covering the central 65% x 75% of the target (as tiny-sd's do: DESIGN 1.7): with
    calibrate_size the trackers keep next-frame IoU >= 0.8."""
    frames, boxes, dboxes, size = _scene(rng)

    def partial(k):
        core = box_masks(torch.tensor(_core(boxes[k], 0.65, 0.75))[None], size, GRID)
        return _with_distractor(core, dboxes[k], size, k)

    tr, _ = _injected_tracker(which, frames, monkeypatch, partial, calibrate_size=True, size_lr=0.5)
    out, _ = tr.run(frames, boxes[0], progress=False)
    ious = iou(out[1:], boxes[1:])
    assert ious.min() >= 0.8, ious


def test_grow_region_is_the_connected_component_of_blob_masks(rng):
    """grow_region against scipy's connected-component labelling (an independent reference,
    4-neighbourhood) on thresholded smooth random maps at odd grid sizes, the peak as seed, K
    maps at once; and its bound: one round (1 turn) cannot follow a staircase that 6 rounds can."""
    nd = pytest.importorskip("scipy.ndimage")
    import torch.nn.functional as F

    from fasttrack.trackers.diffusion.readout import grow_region

    for h, w in ((17, 23), (33, 31), (64, 64)):
        K = 5
        x = torch.randn(K, 1, h, w, generator=rng)
        x = F.avg_pool2d(F.pad(x, (4, 4, 4, 4), mode="reflect"), 9, stride=1)[:, 0]   # blobs
        thr = torch.quantile(x.flatten(1), 0.6, dim=1).view(K, 1, 1)
        active = x >= thr
        peak = x.flatten(1).argmax(1)
        seed = torch.zeros(K, h * w, dtype=torch.bool)
        seed[torch.arange(K), peak] = True
        got = grow_region(seed.view(K, h, w), active)
        for k in range(K):
            lab, _ = nd.label(active[k].numpy())
            want = lab == lab.flatten()[int(peak[k])]
            assert np.array_equal(got[k].numpy(), want), (h, w, k)
    # a 4-connected staircase from (0, 0): each step turns twice
    stair = torch.zeros(1, 9, 9, dtype=torch.bool)
    for i in range(8):
        stair[0, i, i] = stair[0, i, i + 1] = True
    start = torch.zeros_like(stair)
    start[0, 0, 0] = True
    assert grow_region(start, stair, rounds=1).sum() < stair.sum()
    assert torch.equal(grow_region(start, stair, rounds=8), stair)
    assert not grow_region(start, torch.zeros_like(stair)).any()        # a seed outside: nothing
