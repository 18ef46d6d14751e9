"""DINTR: the interpolation process (offset operator), the indications, and the tracker end to
end (patched == unpatched, batch == singles, point / box / mask outputs, save / load, bad input);
what a frame asks of the host (the host-step Adam, host crop windows, batched timestep labels,
the fine-tuning default). CPU, the `tiny` model (the shipped tiny-sd where named), fasttrack's
"torch" backend for the patched path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fasttrack

from fasttrack.data.synthetic import synthetic_sequence
from fasttrack.eval.metrics import iou
from fasttrack.recorder import AttentionRecorder, EagerRecorder
from fasttrack.trackers import DINTR, NotInitializedError
from fasttrack.trackers.diffusion import sd
from fasttrack.trackers.diffusion.crops import crop_images, crop_windows
from fasttrack.trackers.diffusion.prompt_learning import HostStepAdam, initial_prompt
from fasttrack.trackers.diffusion.readout import BoxReader
from fasttrack.trackers.dintr.indication import check_masks, extract, indicator_maps
from fasttrack.trackers.dintr.interpolation import (blend, interpolate, interpolation_timesteps, offset,
                                                    offset_loss)
from fasttrack.trackers.watch import FrameWatch


# ---------------------------------------------------------------- interpolation
def test_timesteps_and_blend(rng):
    assert interpolation_timesteps(4, 200) == [200, 150, 100, 50]
    assert interpolation_timesteps(1, 250) == [250]
    a, b = torch.randn(2, 4, 3, 3, generator=rng), torch.randn(2, 4, 3, 3, generator=rng)
    assert torch.equal(blend(a, b, 4, 4), a) and torch.equal(blend(b, b, 2, 4), b)
    assert torch.allclose(blend(a, b, 1, 4), 0.75 * b + 0.25 * a, atol=1e-6)
    with pytest.raises(ValueError, match="num_steps"):
        interpolation_timesteps(0)


def test_anchor_process_visits_the_blends_and_lands_on_the_next_frame(rng):
    z0, z1 = torch.randn(1, 4, 5, 5, generator=rng), torch.randn(1, 4, 5, 5, generator=rng)
    seen = []

    def step(x, s, ts):
        seen.append((x.clone(), s, ts))
        return torch.zeros_like(x)

    out = list(interpolate(z0, z1, 5, step, mode="anchor", max_timestep=100))
    assert len(out) == 5 and torch.equal(out[-1], z1)
    assert [s for _, s, _ in seen] == [0, 1, 2, 3, 4] and [t for *_, t in seen] == [100, 80, 60, 40, 20]
    for (x, s, _), t in zip(seen, range(5, 0, -1)):
        # x_t = z1 + (t / S) (z0 - z1): the start is the current frame
        assert torch.allclose(x, z1 + t / 5 * (z0 - z1), atol=1e-6)


def test_predicted_offsets_follow_the_learned_step(rng):
    z0, z1 = torch.randn(2, 4, 3, 3, generator=rng), torch.randn(2, 4, 3, 3, generator=rng)
    # psi = the true offset: the learned process reproduces the anchor path (C.27)
    exact = list(interpolate(z0, z1, 4, lambda x, s, t: offset(z0, z1), mode="predicted"))
    assert torch.allclose(exact[-1], z1, atol=1e-5)
    # psi = 0: the state never leaves the current frame; psi = 2 o: it overshoots to 2 z1 - z0
    assert torch.equal(list(interpolate(z0, z1, 3, lambda x, s, t: torch.zeros_like(x), mode="predicted"))[-1], z0)
    over = list(interpolate(z0, z1, 3, lambda x, s, t: 2 * offset(z0, z1), mode="predicted"))[-1]
    assert torch.allclose(over, 2 * z1 - z0, atol=1e-5)
    assert torch.allclose(offset_loss(offset(z0, z1), z0, z1), torch.zeros(2))
    assert torch.allclose(offset_loss(torch.zeros_like(z0), z0, z1), (z0 - z1).pow(2).mean((1, 2, 3)))
    with pytest.raises(ValueError, match="offset"):
        next(interpolate(z0, z1, 2, lambda x, s, t: x, mode="noise"))


# ---------------------------------------------------------------- indications
def test_indicator_maps():
    boxes = torch.tensor([[8.0, 4.0, 16.0, 8.0]])
    pt = indicator_maps("point", boxes, (32, 32), (8, 8))
    assert pt.shape == (1, 8, 8)
    assert divmod(int(pt[0].argmax()), 8) in {(1, 3), (1, 4), (2, 3), (2, 4)}   # centre (16, 8)
    box = indicator_maps("box", boxes, (32, 32), (8, 8))
    assert box[0, 1:3, 2:6].eq(1).all() and box.sum() == 8
    mask = torch.zeros(1, 32, 32)
    mask[0, 0:6, 0:4] = 1
    m = indicator_maps("mask", boxes, (32, 32), (8, 8), mask)
    assert m[0, 0, 0] == 1 and m[0, 1, 0] == 0.5 and m.sum() == 1.5


def test_extract_each_indication():
    maps = torch.zeros(1, 8, 8)
    maps[0, 2:4, 5:7] = 1.0
    maps[0, 3, 6] = 2.0
    prev = torch.tensor([[0.0, 0.0, 10.0, 6.0]])

    def reader(threshold):
        r = BoxReader(threshold, scale_step=float("inf"))
        r.start(prev)
        return r

    box = extract("box", reader(0.4), maps, (16, 16))
    mask = extract("mask", reader(0.4), maps, (16, 16))
    point_reader = reader(0.5)
    point = extract("point", point_reader, maps, (16, 16))
    assert torch.equal(box["boxes"], mask["boxes"])
    up_mask = mask["masks"][0]
    ys, xs = np.nonzero(up_mask.numpy())
    assert box["boxes"][0].tolist() == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    px, py = point["points"][0].tolist()
    assert 12 <= px <= 14 and 6 <= py <= 8                      # the peak cell (3, 6) covers x 12-14
    assert point["boxes"][0, 2:].tolist() == [10.0, 6.0]          # size kept, centred on the point
    assert torch.allclose(point["boxes"][0, :2] + point["boxes"][0, 2:] / 2, point["points"][0])
    assert torch.equal(point_reader.boxes, point["boxes"])        # the next frame searches there
    assert 0.0 < float(box["scores"][0]) <= 1.0


def test_check_masks():
    with pytest.raises(ValueError, match="masks"):
        check_masks(np.zeros((1, 8, 8)), (8, 8))                      # empty mask
    with pytest.raises(ValueError, match="masks"):
        check_masks(np.ones((1, 8, 9)), (8, 8))                       # wrong size
    with pytest.raises(TypeError, match="masks"):
        check_masks([[1]], (1, 1))
    assert check_masks(np.ones((8, 8), bool), (8, 8)).shape == (1, 8, 8)


# ---------------------------------------------------------------- the tracker
@pytest.fixture(scope="module")
def tracker():
    # normalize=False: on a random-weight UNet the column-normalized map is nearly flat, and
    # min-max normalizing a flat map turns fused-vs-eager rounding (1e-7) into 1e-4 loss
    # differences; the normalized maps themselves are compared at 2e-5 in test_recorder.
    tr = DINTR.tiny(0, threshold=0.8, num_steps=2, normalize=False)
    assert not fasttrack.is_patched(tr) and not tr.patched     # plain PyTorch until patched
    return fasttrack.patch(tr, backend="torch")


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(4, size=(96, 112), sprite_size=(24, 28), seed=2)


def test_patched_and_unpatched_give_the_same_boxes(tracker, seq):
    runs = {}
    for patched in (True, False):
        (fasttrack.patch(tracker, backend="torch") if patched else fasttrack.unpatch(tracker))
        assert tracker.patched == patched == fasttrack.is_patched(tracker)
        boxes, spf = tracker.track(seq.frames, seq.gt[0], progress=False)
        runs[patched] = (boxes, tracker.loss_history.clone(), tracker.tokens.clone())
        assert boxes.shape == (4, 4) and boxes.dtype == np.float32 and spf > 0
    fasttrack.patch(tracker, backend="torch")
    assert np.all(iou(runs[True][0], runs[False][0]) >= 0.99)
    assert len({tuple(b) for b in runs[True][0][1:].tolist()}) > 1
    assert torch.allclose(runs[True][1], runs[False][1], rtol=1e-5)
    assert torch.allclose(runs[True][2], runs[False][2], atol=1e-5)
    start = initial_prompt(tracker.sd.null_context, 1)
    assert (runs[True][2] - start).abs().max() > 1e-3                # the tokens were learned


def test_batch_equals_single_runs(tracker, seq):
    boxes = np.stack([seq.gt[0], [70.0, 8.0, 30.0, 24.0]]).astype(np.float64)
    tracker.init_batch(seq[0], boxes)
    batch = np.stack([tracker.update_batch(seq[i]) for i in (1, 2)])
    for k in range(2):
        tracker.init(seq[0], boxes[k])
        single = np.stack([tracker.update(seq[i]) for i in (1, 2)])
        assert np.all(iou(batch[:, k], single) >= 0.99)


def test_point_and_mask_indications(seq):
    point = DINTR.tiny(0, indication="point", num_steps=2)
    point.init(seq[0], seq.gt[0])
    b = point.update(seq[1])
    assert np.allclose(b[2:], seq.gt[0][2:])                       # point tracking keeps the size
    assert np.allclose(b[:2] + b[2:] / 2, point.points[0].numpy())
    # scale_step inf: the box is then exactly the mask's bounding box (with the readout's size
    # prior the box may be clamped while the mask keeps the activated pixels).
    masker = DINTR.tiny(0, indication="mask", num_steps=2, threshold=0.8, scale_step=float("inf"))
    m0 = np.zeros(seq[0].shape[:2], bool)
    x, y, w, h = seq.gt[0].astype(int)
    m0[y:y + h, x:x + w // 2] = True
    masker.init_masks(seq[0], m0)
    b = masker.update(seq[1])
    mk = masker.masks[0].numpy()
    ys, xs = np.nonzero(mk)
    assert mk.shape == m0.shape and b.tolist() == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_save_and_load(tracker, tmp_path):
    sd.tiny_folder(tmp_path, seed=0)
    tracker.save_pretrained(tmp_path)
    loaded = DINTR.from_pretrained(tmp_path, indication="point")
    assert loaded.threshold == 0.8 and loaded.num_steps == 2 and loaded.indication == "point"
    assert loaded.init_steps == tracker.init_steps


def test_bad_input(tracker, seq):
    fresh = DINTR.tiny(1, init_steps=0, num_steps=1)
    with pytest.raises(NotInitializedError, match="init"):
        fresh.update(seq[0])
    with pytest.raises(ValueError, match="boxes"):
        fresh.init_batch(seq[0], [[10.0, 10.0, 5.0, 5.0], [-50.0, 10.0, 5.0, 5.0]])  # outside
    with pytest.raises(ValueError, match="box"):
        fresh.init(seq[0], [10.0, 10.0, 5.0, -1.0])
    with pytest.raises(TypeError, match="image"):
        fresh.init(seq[0].astype(np.int64), [10.0, 10.0, 5.0, 5.0])
    with pytest.raises(ValueError, match="image"):
        fresh.init(seq[0][None], [10.0, 10.0, 5.0, 5.0])
    fresh.init(seq[0], [10.0, 10.0, 5.0, 5.0])
    with pytest.raises(ValueError, match="image"):
        fresh.update(seq[0][:, :100])
    with pytest.raises(ValueError, match="indication"):
        DINTR(fresh.sd, indication="pose")
    with pytest.raises(ValueError, match="offset"):
        DINTR(fresh.sd, offset="gaussian")


# ---------------------------------------------------------------- GPU (skipped without CUDA)
@pytest.mark.gpu
def test_cuda_patched_equals_unpatched_and_no_sync_inside_a_frame(seq):
    # tiny() writes a diffusers model folder; the GPU image has no diffusers unless its wheel
    # is carried (scripts/gpu_check.sh installs .whl/*.whl)
    pytest.importorskip("diffusers", reason="the tiny tracker is built with diffusers")
    tr = DINTR.tiny(0, device="cuda", threshold=0.8, num_steps=2)
    runs = {}
    for patched in (True, False):
        (fasttrack.patch(tr) if patched else fasttrack.unpatch(tr))
        runs[patched], _ = tr.track(seq.frames, seq.gt[0], progress=False)
    assert np.all(iou(runs[True], runs[False]) >= 0.99)
    fasttrack.patch(tr)
    tr.init_batch(seq[0], np.stack([seq.gt[0], [70.0, 8.0, 30.0, 24.0]]))
    frame = torch.from_numpy(seq[1]).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")        # any host-device synchronization raises
    try:
        boxes, scores = tr._step(frame)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert boxes.is_cuda and boxes.shape == (2, 4) and scores.shape == (2,)


def test_online_finetuning_restores_and_keeps_half_precision(seq):
    """The in-place fine-tuning (Eq. 7) moves the UNet, lowers the offset loss on the pair, and
    a new init restores the loaded weights; bfloat16 models step float32 master copies."""
    for dtype in (torch.float32, torch.bfloat16):
        tr = DINTR.tiny(0, dtype=dtype, num_steps=2, init_steps=1, finetune_steps=4,
                        finetune_lr=1e-3, reinject_steps=0)
        name, p = next(iter(tr._tuned.items()))
        loaded = p.detach().clone()
        tr.init(seq[0], seq.gt[0])
        z0, z1 = tr._encode(seq[0]), tr._encode(seq[1])
        tr._finetune(z0, z1)
        losses = torch.stack(tr.finetune_losses)
        assert p.dtype == dtype and not torch.equal(p, loaded), name
        assert losses[2:].mean() < losses[:2].mean(), losses          # the pair's loss goes down
        assert (tr._masters is not None) == (dtype != torch.float32)
        tr.init(seq[0], seq.gt[0])
        assert torch.equal(p, loaded)
    with pytest.raises(ValueError, match="finetune_params"):
        DINTR.tiny(0, finetune_params="everything")
    with pytest.raises(ValueError, match="finetune_steps"):
        DINTR.tiny(0, finetune_steps=-1)


# ---------------------------------------------------------------- what a frame asks of the host
def test_host_step_adam_is_torch_adam_without_host_reads(rng):
    shapes = [(37, 29), (3,), (5, 7, 3)]
    start = [torch.randn(sh, generator=rng) for sh in shapes]
    targets = [torch.randn(sh, generator=rng) for sh in shapes]
    lr = float(torch.empty(()).uniform_(1e-4, 1e-2, generator=rng))
    runs = {}
    for cls in (torch.optim.Adam, HostStepAdam):
        params = [x.clone().requires_grad_(True) for x in start]
        opt = cls(params, lr=lr)
        with FrameWatch() as w:
            for i in range(7):
                opt.zero_grad(set_to_none=True)
                # parameter 1 gets no gradient at steps 2 and 3: skipped, its count lags
                loss = sum(((p - t) ** 3).abs().sum() * (j + 1) for j, (p, t) in enumerate(zip(params, targets))
                           if not (j == 1 and i in (2, 3)))
                loss.backward()
                opt.step()
        runs[cls] = params, w.reads
    for a, b in zip(runs[torch.optim.Adam][0], runs[HostStepAdam][0]):
        assert torch.equal(a, b)                      # the same update, bit for bit
    assert runs[torch.optim.Adam][1] > 0 and runs[HostStepAdam][1] == 0


def _old_crop_images(image, windows, size):
    """The per-window reference: each window read back as Python floats, its own downscale and
    sampling grid (the crops as they were computed from device windows)."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    H, W = t.shape[-2:]
    out = []
    for x0, y0, side in windows.to(torch.float32).tolist():
        src = t
        if size / side < 1:
            f = size / side
            src = F.interpolate(t, size=(max(1, round(H * f)), max(1, round(W * f))), mode="bilinear",
                                align_corners=False, antialias=True)
        Hs, Ws = src.shape[-2:]
        mean = src.mean((2, 3), keepdim=True)
        j = torch.arange(size, dtype=torch.float32) + 0.5
        gx = (x0 + j * (side / size)) * (Ws / W) / Ws * 2 - 1
        gy = (y0 + j * (side / size)) * (Hs / H) / Hs * 2 - 1
        grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), -1)[None]
        out.append(F.grid_sample(src - mean, grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=False) + mean)
    return (torch.cat(out) / 127.5 - 1.0).clamp(-1.0, 1.0)


def test_host_windows_are_the_device_windows_and_crop_from_host_numbers(rng):
    H, W, size = 71, 93, 29
    image = torch.randint(0, 256, (H, W, 3), generator=rng, dtype=torch.uint8).numpy()
    xy = torch.rand(5, 2, generator=rng) * torch.tensor([W, H]) - 10
    wh = torch.rand(5, 2, generator=rng) * 40 + 0.7
    boxes = torch.cat([xy, wh], 1)                  # some hang over the frame, some are tiny
    context = float(torch.empty(()).uniform_(1.0, 4.0, generator=rng))
    dev = crop_windows(boxes, context)
    host = crop_windows(boxes.numpy(), context)
    assert isinstance(host, np.ndarray) and host.dtype == np.float32
    assert np.array_equal(host, dev.numpy())                       # bit for bit
    with FrameWatch() as w:
        x = crop_images(image, host, size, "cpu", torch.float32)
    assert w.reads == 0
    assert torch.equal(x, _old_crop_images(image, dev, size))
    frame = torch.from_numpy(image)                                # an uploaded frame: the same
    assert torch.equal(crop_images(frame, host, size, "cpu", torch.float32), x)


@pytest.fixture(scope="module")
def odd_seq():
    return synthetic_sequence(4, size=(83, 101), sprite_size=(19, 23), seed=5)


def _three_boxes(seq):
    return np.stack([seq.gt[0], [55.0, 7.0, 21.0, 17.0], [9.0, 50.0, 15.0, 23.0]]).astype(np.float64)


def test_dintr_frame_crops_from_host_windows(odd_seq):
    """The frame's crops come from the host copy of the last frame's predicted boxes: the same
    boxes as crops from the device windows read back, one upload and one read per frame."""

    class DeviceWindows(DINTR):
        """A frame's windows read back from the device (the init's from the init boxes)."""

        def _step(self, image):
            self._in_step = True
            try:
                return super()._step(image)
            finally:
                self._in_step = False

        def _host_windows(self):
            if not getattr(self, "_in_step", False):
                return super()._host_windows()
            return crop_windows(self._reader.predicted, self.context).cpu().numpy()

    runs = {}
    for cls in (DINTR, DeviceWindows):
        tr = fasttrack.patch(cls.tiny(0, context=3.0, motion=0.3, num_steps=2, threshold=0.8,
                                      finetune_steps=1), backend="torch")
        tr.init_batch(odd_seq[0], _three_boxes(odd_seq))
        out = []
        for i in range(1, len(odd_seq.frames)):
            with FrameWatch() as w:
                out.append(tr.update_batch(odd_seq[i]))
            if cls is DINTR:
                assert (w.reads, w.writes) == (1, 1), w.summary()   # the boxes' read, the frame's upload
        runs[cls] = np.stack(out)
    assert np.array_equal(runs[DINTR], runs[DeviceWindows])
    assert len({tuple(b) for b in runs[DINTR][:, 0].tolist()}) > 1


def _per_label_maps(tr, z, tokens):
    """The reference of DINTR._maps: one UNet call per timestep label, recorded together."""
    K = tokens.shape[0]
    ctx = tr._context(tokens)
    with tr.reader.start():
        for t in tr._t:
            tr.sd.unet(z.expand(K, -1, -1, -1), t, encoder_hidden_states=ctx)
    return tr.reader.harmonized(tr.alpha, tr.normalize)


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_batched_timestep_labels_equal_one_call_per_label(which, odd_seq, rng):
    if which == "tiny":
        # alpha 0 and 0.3 with normalize: S_bar^T C_bar (nonlinear in the recording)
        trackers = [DINTR.tiny(0, num_steps=3, alpha=a, normalize=n) for a, n in ((0.0, True), (0.3, False))]
    else:
        trackers = [DINTR.pretrained(), DINTR.pretrained(alpha=0.0)]
    for tr in trackers:
        boxes = _three_boxes(odd_seq)
        K = len(boxes)
        z = tr._encode(odd_seq[1])
        tokens = initial_prompt(tr.sd.null_context, K, 1, tr.sd.prompt_init)
        tokens = tokens + 0.3 * torch.randn(tokens.shape, generator=rng)
        for patched in (True, False):
            (fasttrack.patch(tr, backend="torch") if patched else fasttrack.unpatch(tr))
            with torch.no_grad():
                ref = _per_label_maps(tr, z, tokens)
                got = tr._maps(z, tokens)
            assert got.shape == ref.shape == (K, tr.resolution, tr.resolution)
            scale = ref.abs().amax()
            assert torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * float(scale)), (which, patched, (got - ref).abs().max())


@pytest.mark.parametrize("recorder", [AttentionRecorder, EagerRecorder])
def test_recorder_groups_equal_separate_calls(recorder, rng):
    """A batch of G groups recorded in one call with `groups=G` gives the maps of the G groups
    recorded as G calls; the mean of per-group products differs (S^T C is not linear)."""
    tr = DINTR.tiny(0)
    unet = tr.sd.unet
    if recorder is AttentionRecorder:
        fasttrack.patch(unet, backend="torch")
    G, B = 3, 2
    h = unet.config.sample_size
    x = torch.randn(G, B, 4, h - 3, h - 1, generator=rng)
    t = torch.randint(1, 900, (G,), generator=rng)
    ctx = torch.randn(B, tr.sd.null_context.shape[1], tr.sd.null_context.shape[2], generator=rng)
    rec = recorder(unet, resolution=29, cross_layers="all", self_layers="all", tokens=[1, 2])
    with torch.no_grad():
        with rec:
            for g in range(G):
                unet(x[g], t[g], encoder_hidden_states=ctx)
        sep = {n: rec.self_cross(n) for n in (False, True)}
        sep["h"] = rec.harmonized(0.4, True)
        sep["c"] = rec.cross()
        per_group = []
        for g in range(G):
            rec.reset()
            with rec:
                unet(x[g], t[g], encoder_hidden_states=ctx)
            per_group.append(rec.self_cross(False))
        rec.reset()
        with rec:
            unet(x.flatten(0, 1), t.repeat_interleave(B), encoder_hidden_states=ctx.repeat(G, 1, 1))
        one = {n: rec.self_cross(n, groups=G) for n in (False, True)}
        one["h"] = rec.harmonized(0.4, True, groups=G)
        one["c"] = rec.harmonized(1.0, groups=G)
    for key in sep:
        assert one[key].shape == sep[key].shape
        assert torch.allclose(one[key], sep[key], rtol=1e-4, atol=1e-6), (key, (one[key] - sep[key]).abs().max())
    # the mean of the groups' own products is further off by orders of magnitude than rounding
    naive = (torch.stack(per_group).mean(0) - sep[False]).abs().max()
    assert naive > 100 * (one[False] - sep[False]).abs().max() + 1e-6, naive
    with pytest.raises(ValueError, match="groups"):
        rec.self_cross(groups=4)


def test_finetune_default_follows_the_offset_and_skips_the_pair_encode(odd_seq, monkeypatch):
    assert DINTR.tiny(0, finetune_steps=None)._finetune_count == 0                       # anchor
    assert DINTR.tiny(0, finetune_steps=None, offset="predicted")._finetune_count == 1
    assert DINTR.tiny(0, finetune_steps=1)._finetune_count == 1                          # the paper's
    runs = {}
    for steps in (None, 0, 1):
        tr = fasttrack.patch(DINTR.tiny(0, context=3.0, num_steps=2, threshold=0.8, finetune_steps=steps),
                             backend="torch")
        tr.init_batch(odd_seq[0], _three_boxes(odd_seq))
        encodes = []
        real = tr.sd.encode
        monkeypatch.setattr(tr.sd, "encode", lambda images, real=real: encodes.append(len(images)) or real(images))
        before = {n: p.clone() for n, p in tr._tuned.items()}
        runs[steps] = np.stack([tr.update_batch(odd_seq[i]) for i in (1, 2)])
        assert encodes == [3] * (2 if steps is None or steps == 0 else 4)   # one VAE encode a frame
        moved = any(not torch.equal(p, before[n]) for n, p in tr._tuned.items())
        assert moved == (steps == 1) and (tr._opt is None) == (steps != 1)   # no optimizer state unused
    assert np.array_equal(runs[None], runs[0])
