"""Diff-Tracker: map -> box utilities, ResNet18, prompt updater, prompt learning, the eager
(unpatched) map path, and the tracker end to end (patched == unpatched, batch == singles, save /
load, bad input). CPU, the `tiny` model, fasttrack's "torch" backend for the patched path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fasttrack
from fasttrack.data.synthetic import synthetic_sequence
from fasttrack.eval.metrics import iou
from fasttrack.trackers import DiffTracker, NotInitializedError
from fasttrack.trackers.diffusion import sd
from fasttrack.trackers.diffusion.boxes import (box_masks, maps_to_boxes, maps_to_points,
                                                   mass_inside, normalize_maps)
from fasttrack.recorder.eager import EagerRecorder, resize_self_map
from fasttrack.trackers.diffusion.prompt_learning import (initial_prompt, insert_prompt, learn_prompt,
                                                             normalized_mse)
from fasttrack.trackers.diff_tracker.resnet import ResNet18
from fasttrack.trackers.diff_tracker.updater import PromptUpdater, crop_boxes

TINY_UPDATER = dict(prompt_dim=32, width=8, dim=32, heads=2, hidden=64, frame_size=64, template_size=32)


# ---------------------------------------------------------------- boxes
def _ref_box(m: np.ndarray, thr: float):
    ys, xs = np.nonzero(m >= thr)
    return [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_maps_to_boxes_matches_numpy(rng):
    maps = torch.rand(5, 17, 23, generator=rng) ** 4
    norm = normalize_maps(maps)
    boxes, found = maps_to_boxes(norm, 0.7)
    assert found.all()
    for k in range(5):
        assert boxes[k].tolist() == _ref_box(norm[k].numpy(), 0.7)
    # a constant map activates nothing: the fallback box comes back
    flat = normalize_maps(torch.full((1, 4, 4), 3.0))
    fb = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    b, f = maps_to_boxes(flat, 0.5, fb)
    assert not f.item() and b.tolist() == fb.tolist()


def test_box_masks_area_fractions():
    # 12 x 16 image, 6 x 4 grid (cells 2 x 4 px); box edges on a 1/4 px lattice, so a 1/4 px
    # supersampling of the image gives the exact area fractions.
    boxes = torch.tensor([[1.25, 0.5, 9.5, 6.75], [0.0, 0.0, 16.0, 12.0], [13.0, 10.25, 2.0, 1.0]])
    got = box_masks(boxes, (12, 16), (6, 4))
    fine_y = (np.arange(48) + 0.5) / 4
    fine_x = (np.arange(64) + 0.5) / 4
    for k, (x, y, w, h) in enumerate(boxes.tolist()):
        inside = ((fine_y[:, None] >= y) & (fine_y[:, None] < y + h)
                  & (fine_x[None] >= x) & (fine_x[None] < x + w)).astype(np.float64)
        ref = inside.reshape(6, 8, 4, 16).mean(axis=(1, 3))
        np.testing.assert_allclose(got[k].numpy(), ref, atol=1e-6)


def test_points_and_mass_inside():
    m = torch.zeros(2, 8, 10)
    m[0, 3, 7] = 2.0
    m[1, 5, 1] = 1.0
    m[1, 0, 0] = 1.0
    assert maps_to_points(m).tolist() == [[7.5, 3.5], [0.5, 0.5]]
    frac = mass_inside(m, torch.tensor([[7.0, 3.0, 1.0, 1.0], [0.0, 4.0, 3.0, 4.0]]))
    assert frac.tolist() == [1.0, 0.5]


# ---------------------------------------------------------------- ResNet18 and the updater
def test_resnet18_shapes_and_parameter_count():
    net = ResNet18()
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in the classifier.
    assert sum(p.numel() for p in net.parameters()) == 11_689_512 - 513_000
    assert net(torch.zeros(1, 3, 96, 64)).shape == (1, 512, 3, 2)
    assert ResNet18(width=8)(torch.zeros(2, 3, 64, 64)).shape == (2, 64, 2, 2)


def _bilinear(img: np.ndarray, v: float, u: float) -> np.ndarray:
    """img (C, H, W) sampled at index-space point (row v, col u), zeros outside."""
    C, H, W = img.shape
    v0, u0 = int(np.floor(v)), int(np.floor(u))
    out = np.zeros(C)
    for dv in (0, 1):
        for du in (0, 1):
            r, c = v0 + dv, u0 + du
            wgt = (1 - abs(v - r)) * (1 - abs(u - c))
            if 0 <= r < H and 0 <= c < W:
                out += wgt * img[:, r, c]
    return out


def test_crop_boxes_matches_bilinear_sampling(rng):
    img = torch.rand(1, 3, 20, 30, generator=rng)
    box = [4.5, 6.0, 8.0, 5.0]
    crops = crop_boxes(img, torch.tensor([box]), 6)
    ref = np.zeros((3, 6, 6))
    for i in range(6):
        for j in range(6):
            # output pixel centre -> continuous image point -> index space (minus half a pixel)
            v = box[1] + (i + 0.5) * box[3] / 6 - 0.5
            u = box[0] + (j + 0.5) * box[2] / 6 - 0.5
            ref[:, i, j] = _bilinear(img[0].numpy(), v, u)
    np.testing.assert_allclose(crops[0].numpy(), ref, atol=1e-5)


def _features(upd, frames):
    x = upd.prepare(frames, upd.config["frame_size"])
    return upd.short.features(x), upd.long.features(x)


def test_updater_identity_at_init_and_formula(rng):
    torch.manual_seed(0)
    upd = PromptUpdater(**TINY_UPDATER).eval()
    K, P, D = 2, 1, 32
    prompt = torch.randn(K, P, D, generator=rng)
    frames = torch.rand(6, 3, 48, 48, generator=rng) * 2 - 1
    fs, fl = _features(upd, frames)
    short, long = fs[-2:][None], fl[None]
    template = upd.template_tokens(upd.prepare(torch.rand(K, 3, 32, 32, generator=rng), 32))
    with torch.no_grad():
        assert torch.equal(upd(prompt, template, short, long), prompt)     # zero-started heads
        for last in (upd.fusion[-1], upd.blend[-1]):
            last.weight.normal_(0, 0.1, generator=rng)
            last.bias.normal_(0, 0.1, generator=rng)
        out = upd(prompt, template, short, long)
        # p_k = beta p + (1 - beta) H_b(p + l), H_b(x) = x + MLP(x), from the parts
        l_k = upd.motion(template, short, long)
        x = prompt + l_k
        ref = 0.7 * prompt + 0.3 * (x + upd.blend(x))
    assert torch.allclose(out, ref, atol=1e-6) and not torch.allclose(out, prompt, atol=1e-3)


def test_updater_gradients_reach_every_part(rng):
    torch.manual_seed(1)
    upd = PromptUpdater(**TINY_UPDATER).train()
    with torch.no_grad():
        for last in (upd.fusion[-1], upd.blend[-1]):
            last.weight.normal_(0, 0.1, generator=rng)
    frames = torch.rand(6, 3, 48, 48, generator=rng) * 2 - 1
    fs, fl = _features(upd, frames)
    template = upd.template_tokens(upd.prepare(torch.rand(1, 3, 32, 32, generator=rng), 32))
    upd(torch.randn(1, 1, 32, generator=rng), template, fs[-2:][None], fl[None]).pow(2).sum().backward()
    for part in (upd.short, upd.long, upd.appearance, upd.attn_short, upd.attn_long, upd.fusion, upd.blend):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())
    # batch norms keep their running statistics in training mode (frozen BN)
    assert all(not m.training for m in upd.modules() if isinstance(m, torch.nn.BatchNorm2d))


# ---------------------------------------------------------------- prompt learning
def test_insert_prompt_positions():
    null = torch.arange(5 * 3, dtype=torch.float32).view(1, 5, 3)
    p = -torch.ones(2, 2, 3)
    ctx = insert_prompt(null, p)
    assert ctx.shape == (2, 5, 3)
    assert torch.equal(ctx[:, 0], null[:, 0].expand(2, 3)) and torch.equal(ctx[:, 1:3], p)
    assert torch.equal(ctx[:, 3:], null[:, 1:3].expand(2, 2, 3))
    with pytest.raises(ValueError, match="prompt"):
        insert_prompt(null, torch.ones(1, 4, 3))


def test_normalized_mse_is_scale_free(rng):
    m = torch.rand(3, 6, 6, generator=rng)
    gt = (torch.rand(3, 6, 6, generator=rng) > 0.5).float()
    ref = (((m - m.amin((1, 2), keepdim=True)) / (m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True))
            - gt) ** 2).mean((1, 2))
    assert torch.allclose(normalized_mse(m, gt), ref, atol=1e-6)
    assert torch.allclose(normalized_mse(5 * m + 2, gt), ref, atol=1e-6)


def test_learn_prompt_batch_equals_single_runs(rng):
    targets = torch.randn(3, 1, 4, generator=rng)
    start = torch.zeros(3, 1, 4)

    def loss(p, _step, tg=targets):
        return (p - tg).pow(2).sum((1, 2)) * torch.arange(1, p.shape[0] + 1)

    batch, hist = learn_prompt(start, loss, steps=7, lr=0.05)
    assert hist.shape == (7, 3) and bool((hist[-1] < hist[0]).all())
    for k in range(3):
        single, _ = learn_prompt(start[k:k + 1], lambda p, s: (p - targets[k:k + 1]).pow(2).sum((1, 2)) * (k + 1),
                                 steps=7, lr=0.05)
        assert torch.allclose(batch[k:k + 1], single, atol=1e-7)


# ---------------------------------------------------------------- SD components, eager path
def test_tiny_folder_round_trip_and_noise(tmp_path):
    sd.tiny_folder(tmp_path, seed=3)
    a = sd.load_components(tmp_path)
    b = sd.load_components(tmp_path)
    for (n, p), (_, q) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
        assert torch.equal(p, q), n
    assert a.image_size == 128 and a.latent_size == 16 and a.null_context.shape == (1, 77, 32)
    z, e = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    ab = a.alphas_cumprod[100]
    assert torch.allclose(sd.add_noise(z, e, 100, a.alphas_cumprod), ab.sqrt() * z + (1 - ab).sqrt() * e)
    v = sd.diffusion_target(z, e, 100, a.alphas_cumprod, "v_prediction")
    assert torch.allclose(v, ab.sqrt() * e - (1 - ab).sqrt() * z)
    with pytest.raises(ValueError, match="path"):
        sd.load_components(tmp_path / "missing")


def test_resize_self_map_matches_explicit_matrices(rng):
    hw, grid = (3, 4), (6, 8)
    s = torch.softmax(torch.randn(2, 12, 12, generator=rng), -1)
    # U: bilinear upsampling of each key image, built column by column from unit images
    U = F.interpolate(torch.eye(12).view(12, 1, *hw), size=grid, mode="bilinear",
                      align_corners=False).view(12, -1).T                        # (M, N)
    Nn = F.interpolate(torch.eye(12).view(12, 1, *hw), size=grid, mode="nearest").view(12, -1).T
    ref = Nn @ s @ U.T
    assert torch.allclose(resize_self_map(s, hw, grid, False), ref, atol=1e-6)
    ren = ref / ref.sum(-1, keepdim=True)
    assert torch.allclose(resize_self_map(s, hw, grid, True), ren, atol=1e-6)


def test_eager_recorder_matches_fused_recorder(tmp_path, rng):
    sd.tiny_folder(tmp_path, seed=0)
    a, b = sd.load_components(tmp_path), sd.load_components(tmp_path)
    fasttrack.patch(a.unet, backend="torch")
    z = torch.randn(2, 4, 16, 16, generator=rng)
    ctx = torch.randn(2, 77, 32, generator=rng, requires_grad=True)
    kw = dict(resolution=16, cross_layers=["up_blocks.1.*", "up_blocks.2.*"],
              self_layers=["up_blocks.3.*"], tokens=[1, 2])
    out = {}
    for name, comp, rec_cls in (("fused", a, fasttrack.AttentionRecorder), ("eager", b, EagerRecorder)):
        rec = rec_cls(comp.unet, **kw)
        with rec:
            comp.unet(z, torch.tensor(100), encoder_hidden_states=ctx)
        h = rec.harmonized(0.5)
        g, = torch.autograd.grad(h[:, 0].pow(2).sum(), ctx)
        out[name] = (h.detach(), rec.cross().detach(), g)
    assert out["eager"][0].shape == (2, 2, 16, 16)
    for x, y in zip(out["fused"], out["eager"]):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-7)
    # the unpatched path left the diffusers processors in place
    assert type(b.unet.up_blocks[3].attentions[0].transformer_blocks[0].attn1.processor).__name__ == "AttnProcessor2_0"


# ---------------------------------------------------------------- the tracker
@pytest.fixture(scope="module")
def tracker():
    tr = DiffTracker.tiny(0, threshold=0.8, update_from=3)
    assert not fasttrack.is_patched(tr) and not tr.patched     # plain PyTorch until patched
    return fasttrack.patch(tr, backend="torch")


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(5, size=(96, 112), sprite_size=(24, 28), seed=1)


def test_patched_and_unpatched_give_the_same_boxes(tracker, seq):
    runs = {}
    for patched in (True, False):
        (fasttrack.patch(tracker, backend="torch") if patched else fasttrack.unpatch(tracker))
        assert tracker.patched == patched == fasttrack.is_patched(tracker)
        boxes, spf = tracker.track(seq.frames, seq.gt[0], progress=False)
        runs[patched] = (boxes, tracker.loss_history.clone(), tracker.prompt.clone())
        assert boxes.dtype == np.float32 and boxes.shape == (5, 4) and spf > 0
        assert 0.0 <= tracker.score <= 1.0
    fasttrack.patch(tracker, backend="torch")
    assert np.all(iou(runs[True][0], runs[False][0]) >= 0.99)
    # boxes move (the test is not comparing two constant answers)
    assert len({tuple(b) for b in runs[True][0][1:].tolist()}) > 2
    assert torch.allclose(runs[True][1], runs[False][1], rtol=1e-5)
    assert torch.allclose(runs[True][2], runs[False][2], atol=1e-5)


def test_prompt_learning_and_updater_move_the_prompt(tracker, seq):
    tracker.init(seq[0], seq.gt[0])
    p0 = initial_prompt(tracker.sd.null_context, 1)
    assert tracker.loss_history.shape == (3, 1)
    assert (tracker.prompt - p0).abs().max() > 1e-3           # Adam moved the prompt
    learned = tracker.prompt.clone()
    tracker.update(seq[1])
    assert torch.equal(tracker.prompt, learned)               # frames before update_from
    for i in (2, 3):
        tracker.update(seq[i])
    assert not torch.allclose(tracker.prompt, learned, atol=1e-4)  # frame 3: the updater ran


def test_batch_equals_single_runs(tracker, seq):
    boxes = np.stack([seq.gt[0], [60.0, 10.0, 30.0, 20.0]]).astype(np.float64)
    tracker.init_batch(seq[0], boxes)
    batch = [tracker.update_batch(seq[i]) for i in range(1, 4)]
    batch_prompt = tracker.prompt.clone()
    for k in range(2):
        tracker.init(seq[0], boxes[k])
        single = [tracker.update(seq[i]) for i in range(1, 4)]
        assert np.all(iou(np.stack([b[k] for b in batch]), np.stack(single)) >= 0.99)
        assert torch.allclose(batch_prompt[k], tracker.prompt[0], atol=1e-5)


def test_save_and_load(tracker, tmp_path):
    sd.tiny_folder(tmp_path, seed=0)
    tracker.save_pretrained(tmp_path)
    loaded = DiffTracker.from_pretrained(tmp_path, alpha=0.25)
    assert loaded.threshold == 0.8 and loaded.update_from == 3 and loaded.alpha == 0.25
    for (n, p), (_, q) in zip(tracker.updater.state_dict().items(), loaded.updater.state_dict().items()):
        assert torch.equal(p, q), n
    with pytest.raises(ValueError, match="path"):
        DiffTracker.from_pretrained(tmp_path / "nope")


def test_train_updater_changes_weights(seq):
    tr = DiffTracker.tiny(1, update_from=2)
    before = {n: p.clone() for n, p in tr.updater.named_parameters()}
    losses = tr.train_updater([seq], epochs=1, prompt_steps=1, max_frames=4, progress=False)
    assert len(losses) == 2 and all(np.isfinite(losses))
    changed = [n for n, p in tr.updater.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("fusion") for n in changed) and any(n.startswith("short") for n in changed)
    assert not tr.updater.training and not any(p.requires_grad for p in tr.updater.parameters())


def test_bad_input(tracker, seq):
    fresh = DiffTracker.tiny(2, prompt_steps=0)
    with pytest.raises(NotInitializedError, match="init"):
        fresh.update(seq[0])
    img = seq[0]
    with pytest.raises(ValueError, match="box"):
        fresh.init(img, [200.0, 10.0, 5.0, 5.0])                    # outside the frame
    with pytest.raises(ValueError, match="box"):
        fresh.init(img, [10.0, 10.0, 0.0, 5.0])                     # empty
    with pytest.raises(ValueError, match="image"):
        fresh.init(img[..., 0], [10.0, 10.0, 5.0, 5.0])             # wrong rank
    with pytest.raises(TypeError, match="image"):
        fresh.init(img.astype(np.float32), [10.0, 10.0, 5.0, 5.0])  # wrong dtype
    fresh.init(img, [10.0, 10.0, 5.0, 5.0])
    with pytest.raises(ValueError, match="image"):
        fresh.update(img[:64])                                       # frame size changed
    with pytest.raises(ValueError, match="timestep"):
        DiffTracker(fresh.sd, timestep=5000)
    with pytest.raises(ValueError, match="motion"):
        DiffTracker(fresh.sd, motion=-0.5)


# ---------------------------------------------------------------- GPU (skipped without CUDA)
@pytest.mark.gpu
def test_cuda_patched_equals_unpatched_and_no_sync_inside_a_frame(seq):
    # tiny() writes a diffusers model folder; the GPU image has no diffusers unless its wheel
    # is carried (scripts/gpu_check.sh installs .whl/*.whl)
    pytest.importorskip("diffusers", reason="the tiny tracker is built with diffusers")
    tr = DiffTracker.tiny(0, device="cuda", threshold=0.8, update_from=2)
    runs = {}
    for patched in (True, False):
        (fasttrack.patch(tr) if patched else fasttrack.unpatch(tr))
        runs[patched], _ = tr.track(seq.frames, seq.gt[0], progress=False)
    assert np.all(iou(runs[True], runs[False]) >= 0.99)
    fasttrack.patch(tr)
    tr.init(seq[0], seq.gt[0])
    tr.update(seq[1])
    frame = torch.from_numpy(seq[2]).cuda()        # already on the device: no upload
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")        # any host-device synchronization raises
    try:
        boxes, scores = tr._step(frame)             # a whole frame, updater included
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert boxes.is_cuda and boxes.shape == (1, 4) and scores.shape == (1,)
