"""DeTrack end to end: patched vs unpatched tracking, batched vs single, errors, checkpoints,
training, cropping against an independent numpy OSTrack crop, memory gate, FLOP count."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fasttrack.data.synthetic import synthetic_sequence  # noqa: E402
from fasttrack.patch import patch, unpatch  # noqa: E402
from fasttrack.trackers import DeTrack, NotInitializedError  # noqa: E402
from fasttrack.trackers.detrack import DeTrackConfig  # noqa: E402
from fasttrack.bench.detrack import count_step_flops  # noqa: E402
from fasttrack.trackers.detrack.crop import (  # noqa: E402
    IMAGENET_MEAN, IMAGENET_STD, clip_boxes, crop_and_resize, crop_to_frame, frame_to_crop,
    frame_to_tensor)
from fasttrack.trackers.detrack.fused import FusedBoxBranch  # noqa: E402
from fasttrack.trackers.detrack.memory import VisualMemory, score_gate  # noqa: E402
from fasttrack.trackers.detrack.train import sample_batch, train_step  # noqa: E402


def _iou(a, b):
    """Row-wise IoU of (N, 4) [x, y, w, h] arrays (independent of fasttrack.eval)."""
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y2 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter)


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(6, size=(96, 128), sprite_size=(20, 24), seed=1)


def _tracker(seed=0):
    """tiny DeTrack whose box branches have weights large enough to move the boxes, so a wrong
    fused branch cannot hide behind near-zero init weights."""
    tr = DeTrack.tiny(seed=seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for blk in tr.net.blocks:
            for p in blk.box.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.7 / p.shape[1] ** 0.5)
    return tr


class _Identity(torch.nn.Module):
    def forward(self, b, k, v):
        return b


def test_box_branch_moves_boxes(seq):
    tr = _tracker()
    ref, _ = tr.track(seq.frames[:3], seq.gt[0], progress=False)
    for blk in tr.net.blocks:
        blk.box = _Identity()
    without, _ = tr.track(seq.frames[:3], seq.gt[0], progress=False)
    assert np.abs(ref[1:] - without[1:]).max() > 1.0


@pytest.mark.parametrize("backend,frames", [("torch", 6), ("triton", 4)])
def test_patched_tracks_like_unpatched(seq, backend, frames):
    tr = _tracker()
    if backend == "triton" and torch.cuda.is_available():
        tr = tr.to("cuda")  # compiled kernels on a GPU; the interpreter (CPU tensors) without one
    ref, _ = tr.track(seq.frames[:frames], seq.gt[0], progress=False)
    patch(tr, backend=backend)
    assert all(type(b.box) is FusedBoxBranch for b in tr.net.blocks)
    out, _ = tr.track(seq.frames[:frames], seq.gt[0], progress=False)
    unpatch(tr)
    assert out.dtype == np.float32 and out.shape == (frames, 4)
    assert _iou(out, ref).min() >= 0.99
    assert np.abs(out - ref).max() < 1e-3


def test_batched_equals_single(seq):
    tr = _tracker()
    boxes = np.array([seq.gt[0], [60.5, 30.25, 30, 25], [5, 60, 18, 30]], np.float32)
    tr.init_batch(seq.frames[0], boxes)
    batched = np.stack([tr.update_batch(f) for f in seq.frames[1:3]], 1)
    assert tr.scores.shape == (3,)
    for i in range(3):
        single, _ = tr.track(seq.frames[:3], boxes[i], progress=False)
        np.testing.assert_allclose(batched[i], single[1:], atol=1e-3)


def test_track_api_and_pytracking_adapter(seq):
    tr = _tracker()
    boxes, spf = tr.track(iter(seq.frames[:3]), seq.gt[0], progress=False)
    assert boxes.shape == (3, 4) and boxes.dtype == np.float32 and spf > 0
    np.testing.assert_array_equal(boxes[0], seq.gt[0])
    assert isinstance(tr.score, float) and 0 < tr.score < 1
    assert tr.initialize(seq.frames[0], {"init_bbox": list(seq.gt[0])})["time"] >= 0
    res = tr.track(seq.frames[1])
    assert set(res) == {"target_bbox", "score"}
    np.testing.assert_allclose(res["target_bbox"], boxes[1], atol=1e-4)
    out = tr.track(torch.from_numpy(seq.frames[2]), {"previous_output": res})
    np.testing.assert_allclose(out["target_bbox"], boxes[2], atol=1e-4)


def test_input_errors(seq):
    tr = _tracker()
    frame = seq.frames[0]
    with pytest.raises(NotInitializedError, match="init"):
        tr.update(frame)
    assert issubclass(NotInitializedError, ValueError)
    bad_images = [(frame[..., 0], ValueError), (frame.astype(np.float32), TypeError),
                  (np.zeros((96, 128, 4), np.uint8), ValueError), (frame.tolist(), TypeError),
                  (np.zeros((0, 128, 3), np.uint8), ValueError)]
    for img, err in bad_images:
        with pytest.raises(err, match="image"):
            tr.init(img, seq.gt[0])
    for box in ([200, 10, 20, 20], [-50, 10, 20, 20], [10, 10, 0, 20], [10, 10, 20, -1],
                [10, np.nan, 20, 20], [1, 2, 3], "abcd"):
        with pytest.raises((ValueError, TypeError), match="box"):
            tr.init(frame, box)
    with pytest.raises(ValueError, match=r"boxes\[1\]"):
        tr.init_batch(frame, [seq.gt[0], [0, 0, 0, 5]])
    with pytest.raises(ValueError, match="boxes"):
        tr.init_batch(frame, np.zeros((0, 4)))
    tr.init(frame, seq.gt[0])
    with pytest.raises(ValueError, match="image"):
        tr.update(np.zeros((97, 128, 3), np.uint8))
    with pytest.raises(TypeError, match="config"):
        DeTrack(config={"dim": 64})


def test_checkpoint_round_trip_and_mismatch(seq, tmp_path):
    tr = _tracker()
    ref, _ = tr.track(seq.frames[:3], seq.gt[0], progress=False)
    path = tmp_path / "tiny.pt"
    patch(tr, backend="torch")
    tr.save(path)  # a patched tracker saves the same keys
    unpatch(tr)
    loaded = DeTrack.from_checkpoint(path)
    out, _ = loaded.track(seq.frames[:3], seq.gt[0], progress=False)
    np.testing.assert_array_equal(out, ref)
    other = DeTrack.tiny(seed=5)
    other.load_state_dict(str(path))
    np.testing.assert_array_equal(other.track(seq.frames[:3], seq.gt[0], progress=False)[0], ref)

    sd = tr.state_dict()
    broken = {k: v for k, v in sd.items() if k != "net.pos_x"}
    broken["net.extra"] = torch.zeros(1)
    msg = r"state_dict.*missing keys \['net.pos_x'\].*unexpected keys \['net.extra'\]"
    with pytest.raises(ValueError, match=msg):
        tr.load_state_dict(broken)
    wide = DeTrack.tiny(dim=96, heads=4, refine_heads=4)
    msg = r"shape mismatches.*net.pos_x: checkpoint \(1, 64, 96\) vs model \(1, 64, 64\)"
    with pytest.raises(ValueError, match=msg):
        tr.load_state_dict(wide.state_dict())
    with pytest.raises(TypeError, match="state_dict"):
        tr.load_state_dict(3)


def test_training_step_reduces_loss_patched(seq):
    tr = _tracker()
    patch(tr, backend="torch")  # fused branches fall back to the reference under autograd
    batch = sample_batch([seq], 3, tr.config, generator=np.random.default_rng(0))
    assert batch["templates"].shape == (3, 3, 3, 32, 32) and batch["traj"].shape == (3, 7, 4)
    opt = torch.optim.Adam(tr.parameters(), lr=2e-3)
    losses = [train_step(tr, opt, batch, generator=torch.Generator().manual_seed(0))
              for _ in range(8)]
    assert all(math.isfinite(v) for v in losses[-1].values())
    assert losses[-1]["total"] < 0.5 * losses[0]["total"]
    assert losses[-1]["denoise"] < losses[0]["denoise"]
    assert tr.net.blocks[0].box.q.weight.grad is not None


def _ostrack_crop_np(img, box, factor, out):
    """OSTrack sample_target in numpy: zero-padded integer crop, cv2-style bilinear resize
    (half-pixel centres, edge replicate inside the crop), ImageNet normalization. (3, out, out)."""
    x, y, w, h = (float(v) for v in box)
    side = math.ceil(math.sqrt(w * h) * factor)
    x0, y0 = round(x + 0.5 * w - side * 0.5), round(y + 0.5 * h - side * 0.5)
    H, W = img.shape[:2]
    crop = np.zeros((side, side, 3))
    ys, xs = slice(max(y0, 0), min(y0 + side, H)), slice(max(x0, 0), min(x0 + side, W))
    crop[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = img[ys, xs]
    src = np.clip((np.arange(out) + 0.5) * side / out - 0.5, 0, side - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, side - 1)
    f = src - lo
    rows = crop[lo] * (1 - f)[:, None, None] + crop[hi] * f[:, None, None]
    res = rows[:, lo] * (1 - f)[None, :, None] + rows[:, hi] * f[None, :, None]
    res = (res / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return res.transpose(2, 0, 1), (x0, y0, side)


def test_crop_matches_ostrack_numpy_reference(seq):
    img = seq.frames[0]
    # downscaling crops (side >= out) never sample past the crop, where cv2 and the sampler
    # differ; the second box hangs over the top-left corner (zero padding)
    boxes = np.array([[31.3, 25.6, 24.2, 20.7], [2.2, 1.5, 30.1, 25.3], [90.4, 60.2, 35.0, 33.9]])
    frame = frame_to_tensor(torch.from_numpy(img))
    crops, x0, y0, side = crop_and_resize(frame, torch.tensor(boxes, dtype=torch.float32), 4.0, 64)
    for i, box in enumerate(boxes):
        ref, (rx, ry, rs) = _ostrack_crop_np(img, box, 4.0, 64)
        assert (x0[i].item(), y0[i].item(), side[i].item()) == (rx, ry, rs)
        np.testing.assert_allclose(crops[i].numpy(), ref, atol=2e-5)


def test_crop_coordinates_round_trip_and_clip(rng):
    scale, low = torch.tensor([100.0, 80.0, 30.0, 20.0]), torch.tensor([0, 0, 5.0, 5.0])
    boxes = torch.rand(5, 4, generator=rng) * scale + low
    x0, y0, side = boxes[:, 0] - 7.0, boxes[:, 1] + 3.0, torch.full((5,), 53.0)
    xyxy = frame_to_crop(boxes, x0, y0, side)
    torch.testing.assert_close(crop_to_frame(xyxy, x0, y0, side), boxes, atol=1e-4, rtol=0)
    flipped = xyxy[:, [2, 3, 0, 1]]  # x2 < x1: sorted back into a valid box
    torch.testing.assert_close(crop_to_frame(flipped, x0, y0, side), boxes, atol=1e-4, rtol=0)
    clipped = clip_boxes(torch.tensor([[-5.0, 70.0, 30.0, 40.0], [50.0, 10.0, 1.0, 2.0]]), 80, 100, 10.0)
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 70.0, 25.0, 10.0], [50.0, 10.0, 10.0, 10.0]]))


def test_memory_gate_round_robin():
    first = torch.arange(3 * 2 * 1, dtype=torch.float32).view(3, 2, 1)
    mem = VisualMemory(first, slots=3)
    gate = score_gate(torch.tensor([0.8, 0.8, 0.7]), torch.tensor([0.95, 0.9, 0.99]), 0.75, 0.9)
    assert gate.tolist() == [True, False, False]
    for step, g in enumerate(([True, False, True], [True, True, False], [True, False, False])):
        mem.update(torch.full((3, 2, 1), 100.0 + step), torch.tensor(g))
    slots = mem.tokens[:, :, 0, 0].tolist()
    assert slots[0] == [0.0, 102.0, 101.0]   # slot 1, slot 2, then slot 1 again
    assert slots[1] == [2.0, 101.0, 2.0]
    assert slots[2] == [4.0, 100.0, 4.0]
    assert mem.next_slot.tolist() == [2, 2, 2]


def _analytic_flops(cfg: DeTrackConfig) -> int:
    """2 * MACs of one step, written from the architecture (independent of the FLOP counter)."""
    C, p = cfg.dim, cfg.patch
    nz, nx, K = cfg.template_tokens, cfg.search_tokens, cfg.n_templates
    N = K * nz + nx
    hid = int(round(C * cfg.mlp_ratio))
    bhid = int(round(C * cfg.box_mlp_ratio))
    nph = cfg.noise_hidden or C
    macs = (nx + nz) * C * 3 * p * p                                   # two patch embeddings
    macs += cfg.depth * (N * C * 4 * C + 2 * N * N * C + 2 * N * C * hid)  # visual blocks
    macs += cfg.depth * (4 * 2 * C * C + 2 * 4 * nx * C + 2 * 4 * C * bhid + 2 * 4 * C * nph)
    S = (cfg.traj_len + 1) * 4
    macs += cfg.refine_depth * (S * C * 4 * C + 2 * S * S * C + 2 * S * C * hid)
    macs += 4 * C * cfg.n_bins + C * C + C                             # mapping + IoU head
    return 2 * macs


@pytest.mark.parametrize("name", ["tiny", "detrack256"])
def test_flop_count_matches_architecture(name):
    cfg = getattr(DeTrack, name)(device="meta").config
    assert count_step_flops(name) == _analytic_flops(cfg)


def test_lazy_tracker_names():
    import fasttrack.trackers as trackers

    assert trackers.DeTrack is DeTrack
    assert "DiffTracker" in dir(trackers) and "DINTR" in dir(trackers)
    with pytest.raises(AttributeError):
        trackers.NoSuchTracker  # noqa: B018


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_step_equals_eager(seq):
    eager = _tracker().cuda()
    eager.use_graph = False
    graphed = _tracker().cuda()
    patch(graphed)
    a, _ = eager.track(seq.frames, seq.gt[0], progress=False)
    b, _ = graphed.track(seq.frames, seq.gt[0], progress=False)
    assert graphed._graph.graph is not None
    assert _iou(a, b).min() >= 0.99
