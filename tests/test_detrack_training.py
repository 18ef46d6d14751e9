"""What makes DeTrack learn (DESIGN.md 1.7), its training loop and CLI, the held-out split, the
multi-pass sampler and the shipped weights.

Each defect fix has a test that fails without it: the box query (permuting the initial noise
must not permute the decoded box; with the query zeroed it does, exactly), t drawn near
infer_t, trajectories that are not the clean ground truth and templates never from the search
frame. The training test trains the tiny model from scratch and must beat the static-box
baseline on held-out sequences; the shipped weights must track the held-out test split and
give the same boxes patched and unpatched, batched and single."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fasttrack.data.synthetic import (SPLIT_SIZES, random_synthetic_sequence,  # noqa: E402
                                      synthetic_sequence, synthetic_split)
from fasttrack.patch import patch, unpatch  # noqa: E402
from fasttrack.trackers import DeTrack  # noqa: E402
from fasttrack.trackers.detrack import DeTrackConfig  # noqa: E402
from fasttrack.trackers.detrack.crop import frame_to_crop  # noqa: E402
from fasttrack.trackers.detrack.train import (default_t_min, detrack_losses,  # noqa: E402
                                              sample_batch, train_step)
from fasttrack.train import TrainOptions, heldout_ao, train_detrack  # noqa: E402


def _inputs(net, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cfg = net.cfg
    z = torch.randn(B, cfg.n_templates, cfg.template_tokens, cfg.dim, generator=g)
    x = torch.randn(B, cfg.search_tokens, cfg.dim, generator=g)
    traj = torch.rand(B, cfg.traj_len, 4, generator=g)
    b = torch.randn(B, 4, cfg.dim, generator=g)
    return z, x, traj, b


def _decode(net, z, x, traj, b):
    _, out, _ = net.denoise(z, x, b)
    return net.head(out, traj)["xyxy"]


def test_box_query_breaks_the_permutation_symmetry():
    torch.manual_seed(0)
    net = DeTrack.tiny(seed=3).net.double()
    z, x, traj, b = (t.double() for t in _inputs(net))
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        out = _decode(net, z, x, traj, b)
        out_perm = _decode(net, z, x, traj, b[:, perm])
        # the fix: which token is x1 no longer depends on the noise it starts from
        assert (out_perm - out[:, perm]).abs().max() > 1e-3
        net.box_query.zero_()  # without it: exactly equivariant, the tokens are interchangeable
        out = _decode(net, z, x, traj, b)
        out_perm = _decode(net, z, x, traj, b[:, perm])
        torch.testing.assert_close(out_perm, out[:, perm], rtol=0, atol=1e-12)


def test_training_t_is_drawn_near_infer_t():
    tr = DeTrack.tiny(seed=0)
    cfg = tr.config
    assert cfg.infer_t == cfg.timesteps and default_t_min(cfg) == cfg.timesteps - cfg.timesteps // 20
    seen = []
    real_abar = tr.net.abar
    tr.net.abar = lambda t: (seen.append(t.clone()), real_abar(t))[1]
    seq = synthetic_sequence(8, size=(64, 80), sprite_size=(14, 16), seed=2)
    batch = sample_batch([seq], 16, cfg, generator=np.random.default_rng(0))
    detrack_losses(tr.net, batch, torch.Generator().manual_seed(0))
    drawn = seen[0]  # the first call noises the input at the drawn t
    assert drawn.min() >= default_t_min(cfg) and drawn.max() <= cfg.infer_t
    assert len(set(drawn.tolist())) > 4
    seen.clear()
    detrack_losses(tr.net, batch, torch.Generator().manual_seed(0), t_min=1)
    assert seen[0].min() < default_t_min(cfg)
    with pytest.raises(ValueError, match="t_min"):
        detrack_losses(tr.net, batch, t_min=cfg.infer_t + 1)


def test_training_noises_with_the_trackers_own_sample():
    """fixed_noise = 1: every sample starts from net.box_noise, the noise the tracker feeds at
    inference (at t = infer_t = T, abar = 0, the box branch input is exactly it); 0: fresh noise
    for every sample; in between, a mix."""
    tr = DeTrack.tiny(seed=0)
    cfg = tr.config
    seq = synthetic_sequence(8, size=(64, 80), sprite_size=(14, 16), seed=2)
    batch = sample_batch([seq], 16, cfg, generator=np.random.default_rng(0))
    seen = []
    real = tr.net.denoise
    tr.net.denoise = lambda z, x, b: (seen.append(b.detach().clone()), real(z, x, b))[1]
    fixed = tr.net.box_noise.expand(16, 4, cfg.dim)

    def same_as_fixed(p):
        seen.clear()
        detrack_losses(tr.net, batch, torch.Generator().manual_seed(1), t_min=cfg.infer_t,
                       fixed_noise=p)
        return (seen[0] - fixed).abs().amax((1, 2)) == 0

    assert same_as_fixed(1.0).all()
    assert not same_as_fixed(0.0).any()
    mixed = same_as_fixed(0.5)
    assert 0 < int(mixed.sum()) < 16
    with pytest.raises(ValueError, match="fixed_noise"):
        detrack_losses(tr.net, batch, fixed_noise=1.5)


def _indexed_sequence(n=12):
    """Frames of constant grey level 10 * i (frame i) with a moving box: the crops tell which
    frame they came from."""
    frames = [np.full((80, 96, 3), 10 * i, np.uint8) for i in range(n)]
    gt = np.array([[10 + 3 * i, 20 + i, 16 + (i % 3), 14] for i in range(n)], np.float32)
    return frames, gt


def test_sample_batch_imitates_a_tracker_step():
    cfg = DeTrack.tiny().config
    frames, gt = _indexed_sequence()
    rng = np.random.default_rng(0)
    batch = sample_batch([(frames, gt)], 48, cfg, generator=rng, traj_static=0.0,
                         first_templates=0.0)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]

    def frame_of(crop):  # grey level of a crop's centre pixel -> frame index
        px = (crop[:, crop.shape[1] // 2, crop.shape[2] // 2] * std[:, 0, 0] + mean[:, 0, 0]) * 255
        return int(round(float(px.mean()) / 10))

    for i in range(48):
        s = frame_of(batch["search"][i])
        temps = [frame_of(t) for t in batch["templates"][i]]
        assert temps[0] == 0 and all(t < s for t in temps), (s, temps)
        # the crop is centred on the last trajectory box (the tracker's previous prediction)
        last = batch["traj"][i, -1]
        np.testing.assert_allclose(((last[0] + last[2]) / 2).item(), 0.5, atol=0.02)
        # ... and the ground truth is frame s's box in that crop
        x0 = y0 = None  # noqa: F841  (the crop window is implied by the trajectory's last box)
    # the earlier trajectory boxes are not the clean ground truth of their frames
    clean = sample_batch([(frames, gt)], 8, cfg, generator=np.random.default_rng(1),
                         traj_noise=0.0, traj_static=0.0)
    noisy = sample_batch([(frames, gt)], 8, cfg, generator=np.random.default_rng(1),
                         traj_static=0.0)
    torch.testing.assert_close(clean["gt"], noisy["gt"])
    assert (clean["traj"][:, :-1] - noisy["traj"][:, :-1]).abs().max() > 0.02
    static = sample_batch([(frames, gt)], 4, cfg, generator=np.random.default_rng(2),
                          traj_static=1.0)
    torch.testing.assert_close(static["traj"], static["traj"][:, -1:].expand_as(static["traj"]))


def test_sample_batch_mixes_small_crop_errors():
    """small_jitter_prob of the items are cropped with the small centre error: with a target
    that never moves and small_jitter 0 those crops are centred on it (to the half pixel the
    crop window's rounding moves it: < 0.015 of the crop here)."""
    cfg = DeTrack.tiny().config
    frames = [np.full((80, 96, 3), 10 * i, np.uint8) for i in range(10)]
    gt = np.tile(np.array([[30, 25, 16, 14]], np.float32), (10, 1))

    def centre_offsets(**kw):
        b = sample_batch([(frames, gt)], 64, cfg, generator=np.random.default_rng(3), **kw)["gt"]
        return ((b[:, :2] + b[:, 2:]) / 2 - 0.5).abs().amax(1)

    assert centre_offsets(small_jitter=0.0, small_jitter_prob=1.0).max() < 0.015
    wide = centre_offsets(small_jitter=0.0, small_jitter_prob=0.0)
    assert (wide < 0.015).sum() == 0 and wide.max() > 0.15
    mixed = centre_offsets(small_jitter=0.0, small_jitter_prob=0.5)
    assert 16 <= int((mixed < 0.015).sum()) <= 48 and mixed.max() > 0.15
    # small jitter is smaller: the largest offset shrinks with it
    assert centre_offsets(small_jitter=0.3, small_jitter_prob=1.0).max() < 0.6 * wide.max()
    for bad in (dict(small_jitter_prob=1.5), dict(small_jitter=-1.0), dict(center_jitter=-0.1)):
        with pytest.raises(ValueError, match="jitter"):
            sample_batch([(frames, gt)], 2, cfg, **bad)


def test_sample_batch_skips_absent_frames_and_rejects_empty_data():
    cfg = DeTrack.tiny().config
    frames, gt = _indexed_sequence(6)
    gt[2:5] = np.nan
    batch = sample_batch([(frames, gt)], 6, cfg, generator=np.random.default_rng(0))
    assert torch.isfinite(batch["gt"]).all() and torch.isfinite(batch["traj"]).all()
    with pytest.raises(ValueError, match="two valid boxes"):
        sample_batch([(frames[:1], gt[:1])], 2, cfg, generator=np.random.default_rng(0))
    with pytest.raises(ValueError, match="batch_size"):
        sample_batch([(frames, gt)], 0, cfg)


def test_multi_pass_sampler():
    tr = DeTrack.tiny(seed=1)
    net = tr.net
    z, x, traj, _ = _inputs(net, B=3, seed=4)
    prior = torch.tensor([[0.3, 0.3, 0.6, 0.7]]).repeat(3, 1)
    calls = []
    real = net.denoise
    net.denoise = lambda *a: (calls.append(1), real(*a))[1]
    with torch.no_grad():
        one = net.predict(z, x, prior, traj)
        assert len(calls) == 1
        torch.testing.assert_close(net.predict(z, x, prior, traj, denoise_steps=1)["xyxy"], one["xyxy"])
        calls.clear()
        many = net.predict(z, x, prior, traj, denoise_steps=4)
    assert len(calls) == 4 and torch.isfinite(many["xyxy"]).all()
    assert (many["xyxy"] - one["xyxy"]).abs().max() > 1e-4
    assert net.pass_steps(4) == [1000, 750, 500, 250]
    with pytest.raises(ValueError, match="denoise_steps"):
        net.pass_steps(0)
    with pytest.raises(ValueError, match="denoise_steps"):
        DeTrackConfig(denoise_steps=2000)
    seq = synthetic_sequence(4, size=(64, 80), sprite_size=(14, 16), seed=2)
    multi = DeTrack.tiny(seed=1, denoise_steps=3)
    boxes, _ = multi.track(seq.frames, seq.gt[0], progress=False)
    assert np.isfinite(boxes).all()


def test_synthetic_splits_are_disjoint_and_fixed():
    test = synthetic_split("test", num=3, num_frames=5)
    again = synthetic_split("test", num=3, num_frames=5)
    for a, b in zip(test, again):
        assert a.name == b.name and np.array_equal(a.gt, b.gt)
        assert all(np.array_equal(f, g) for f, g in zip(a.frames, b.frames))
    train = synthetic_split("train", num=40, num_frames=3)
    assert {s.size for s in train} <= set(SPLIT_SIZES["train"])
    assert not {s.size for s in synthetic_split("test", num=12, num_frames=3)} & set(SPLIT_SIZES["train"])
    assert not {s.meta["seed"] for s in train} & {s.meta["seed"] for s in test}
    kinds = {s.meta["background_kind"] for s in train}
    assert kinds == {"waves", "texture", "flat"}
    assert any(len(s.meta["distractors"]) for s in train) and any(s.meta["occlusion"] for s in train)
    seq = synthetic_sequence(6, size=(80, 96), sprite_size=(12, 14), seed=5, distractors=2,
                             background="texture", speed=2.0)
    d = seq.meta["distractors"]
    assert d.shape == (2, 6, 4)
    x, y, w, h = (int(v) for v in d[0, 0])
    np.testing.assert_array_equal(seq.frames[0][y:y + 2, x:x + 2], seq.meta["sprite"][:2, :2]) \
        if not _overlaps(d[0, 0], seq.gt[0]) else None
    assert np.array_equal(synthetic_sequence(5, seed=3).frames[4],
                          synthetic_sequence(5, seed=3, background="waves").frames[4])
    with pytest.raises(ValueError, match="background"):
        synthetic_sequence(4, background="sky")
    with pytest.raises(ValueError, match="speed"):
        synthetic_sequence(4, speed=0)
    with pytest.raises(ValueError, match="split"):
        synthetic_split("holdout")
    assert random_synthetic_sequence(np.random.default_rng(0), 3).gt.shape == (3, 4)


def test_close_distractors_cross_the_target():
    """close_distractors: a look-alike that keeps passing near and across the target; off
    (the held-out splits), the draws and frames are those without the option."""
    rng = np.random.default_rng(7)
    seq = random_synthetic_sequence(rng, 60, SPLIT_SIZES["train"], close_distractors=1.0)
    d = seq.meta["distractors"][-1]
    g = seq.gt
    dist = np.hypot(*((g[:, :2] + g[:, 2:] / 2) - (d[:, :2] + d[:, 2:] / 2)).T) / np.sqrt(g[:, 2] * g[:, 3])
    assert dist.min() < 0.5 and np.median(dist) < 2.5
    assert np.array_equal(seq.meta["sprite"][0, 0], np.asarray(seq.frames[0])[int(d[0, 1]), int(d[0, 0])]) \
        or _overlaps(d[0], g[0])  # drawn (under the target where they overlap)
    a = random_synthetic_sequence(np.random.default_rng(3), 10)
    b = random_synthetic_sequence(np.random.default_rng(3), 10, close_distractors=0.0)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    with pytest.raises(ValueError, match="close_distractors"):
        synthetic_sequence(4, close_distractors=-1)
    with pytest.raises(ValueError, match="close_distractors"):
        random_synthetic_sequence(np.random.default_rng(0), 4, close_distractors=1.5)
    for bad, match in ((dict(close_distractors=2.0), "close-distractors"),
                       (dict(fixed_noise=-0.1), "fixed-noise"),
                       (dict(denoise_weight=-1.0), "denoise-weight"),
                       (dict(small_jitter_prob=1.2), "small-jitter-prob"),
                       (dict(small_jitter=-0.5), "small-jitter"),
                       (dict(val_frames=1), "val-frames")):
        with pytest.raises(ValueError, match=match):
            TrainOptions(steps=1, **bad).check()


def _overlaps(a, b):
    return not (a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1])


def _static_ao(seqs):
    """AO of holding the first box: the baseline a tracker must beat."""
    from fasttrack.eval import metrics

    return float(np.mean([metrics(np.repeat(s.gt[:1], len(s), 0), s.gt, skip_first=True)["ao"]
                          for s in seqs]))


def test_training_from_scratch_beats_the_static_box(tmp_path):
    """The tiny model with the shipped weights' box head ("center") trained from scratch on the
    synthetic stream for TRAIN_STEPS steps tracks 4 held-out test sequences with AO >=
    TRAIN_MIN_AO, far above holding the first box (the unfixed trainer scored 0.006 and the
    trainer with clean trajectories 0.05, both below that baseline)."""
    torch.set_num_threads(1)
    opts = TrainOptions(steps=TRAIN_STEPS, eval_every=TRAIN_STEPS, val_sequences=2,
                        out=str(tmp_path / "run"), progress=False, seed=0,
                        close_distractors=TRAIN_CLOSE_DISTRACTORS, box_head="center")
    result = train_detrack(opts, log=lambda *_: None)
    held_out = synthetic_split("test", num=4, num_frames=30)
    ao = heldout_ao(result["tracker"], held_out)["ao"]
    static = _static_ao(held_out)
    assert ao >= TRAIN_MIN_AO and ao > static + 0.2, (ao, static)
    curve = json.loads((tmp_path / "run" / "curve.json").read_text())
    assert curve[-1]["step"] == TRAIN_STEPS


def test_bin_decoder_learns_a_batch():
    """The paper's bin decoder (`box_head="bins"`) and its losses learn: 60 steps on one fixed
    batch halve the loss and raise the box IoU (a broken loss, gradient or decoder does not).
    Its closed-loop AO after a CI-sized run is no test: on the synthetic split without the
    colour cue 600 steps score 0.04 (the centre head's 400 steps: above TRAIN_MIN_AO)."""
    torch.set_num_threads(1)
    tracker = DeTrack.tiny(seed=0, box_head="bins")
    seqs = synthetic_split("train", num=4, num_frames=8)
    batch = sample_batch(seqs, 8, tracker.config, generator=np.random.default_rng(0))
    opt = torch.optim.AdamW(tracker.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    first = train_step(tracker, opt, batch, generator=gen, fixed_noise=1.0)
    for _ in range(60):
        last = train_step(tracker, opt, batch, generator=gen, fixed_noise=1.0)
    assert last["total"] < 0.5 * first["total"], (first, last)
    assert last["box_iou"] > first["box_iou"] + 0.2, (first, last)


# The CI training budget and the held-out AO it must reach on 4 fixed held-out sequences of the
# synthetic split without the colour cue (regenerated with the photo work; the split before it
# gave the centre head 0.878 at 400 steps).
TRAIN_STEPS = 400
TRAIN_MIN_AO = 0.5
# With crossing look-alikes in the stream (close_distractors 0.3) 600 steps gave 0.35.
TRAIN_CLOSE_DISTRACTORS = 0.0


def test_train_loop_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    common = dict(batch_size=2, val_sequences=1, out=str(out), progress=False)
    first = train_detrack(TrainOptions(steps=3, eval_every=2, **common), log=lambda *_: None)
    assert [c["step"] for c in first["curve"]] == [2, 3]
    for name in ("last.pt", "detrack.pt", "curve.json"):
        assert (out / name).is_file()
    meta = torch.load(out / "detrack.pt", weights_only=True)["meta"]
    assert meta["recipe"]["batch_size"] == 2 and meta["step"] in (2, 3)
    logs = []
    resumed = train_detrack(TrainOptions(steps=5, eval_every=2, resume=True, **common), log=logs.append)
    assert any("resumed" in line and "step 3" in line for line in logs)
    assert [c["step"] for c in resumed["curve"]] == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="--resume"):
        train_detrack(TrainOptions(steps=1, resume=True, **{**common, "out": str(tmp_path / "none")}))
    with pytest.raises(ValueError, match="another model"):
        train_detrack(TrainOptions(steps=6, resume=True, config="detrack256", **common))
    for bad, match in ((dict(steps=None), "--minutes or --steps"), (dict(steps=0), "--steps"),
                       (dict(steps=1, config="huge"), "config"), (dict(steps=1, lr=0), "--lr"),
                       (dict(minutes=-1), "--minutes")):
        with pytest.raises(ValueError, match=match):
            train_detrack(TrainOptions(**{**common, **bad}))


def test_training_reads_real_data_layouts(tmp_path):
    """--data takes a GOT-10k-layout folder through the eval readers (frames read from disk)."""
    from fasttrack.commands.dataset import write_synthetic
    from fasttrack.train import TrainingData

    write_synthetic(tmp_path / "got", num=2, frames=5, size=(64, 80))
    data = TrainingData([str(tmp_path / "got")], seed=0)
    assert len(data.sequences) == 2 and "2 real sequences" in data.describe()
    batch = sample_batch(data.sequences, 3, DeTrack.tiny().config, generator=np.random.default_rng(0))
    assert batch["search"].shape == (3, 3, 64, 64)
    with pytest.raises(ValueError, match="sources"):
        TrainingData([])


# --------------------------------------------------------------------------- shipped weights
@pytest.fixture(scope="module")
def pretrained():
    return DeTrack.pretrained()


def test_pretrained_tracks_held_out_sequences(pretrained):
    held_out = synthetic_split("test", num=4)
    res = heldout_ao(pretrained, held_out)
    meta = torch.load(_weights_path(), weights_only=True)["meta"]
    # the shipped number is reproduced here, and it beats holding the first box by far
    assert res["ao"] > _static_ao(held_out) + 0.2
    assert abs(res["ao"] - meta["test4_ao"]) < 1e-3, (res, meta["test4_ao"])
    assert meta["photos_test"]["ao"] > meta["static_photos_test_ao"] + 0.15


def _weights_path():
    from importlib import resources

    return resources.files("fasttrack.trackers.detrack").joinpath("weights", "detrack_tiny.pt")


def test_pretrained_patched_equals_unpatched_and_batched_equals_single(pretrained):
    seq = synthetic_split("test", num=1, num_frames=12, start=2)[0]
    ref, _ = pretrained.track(seq.frames, seq.gt[0], progress=False)
    patch(pretrained, backend="torch")
    try:
        out, _ = pretrained.track(seq.frames, seq.gt[0], progress=False)
    finally:
        unpatch(pretrained)
    np.testing.assert_allclose(out, ref, atol=1e-3)
    boxes = np.array([seq.gt[0], seq.gt[0] + [5, 3, 0, 0], [10, 12, 20, 18]], np.float32)
    pretrained.init_batch(seq.frames[0], boxes)
    batched = np.stack([pretrained.update_batch(f) for f in seq.frames[1:6]], 1)
    for i in range(3):
        single, _ = pretrained.track(seq.frames[:6], boxes[i], progress=False)
        np.testing.assert_allclose(batched[i], single[1:], atol=1e-3)


def test_pretrained_options_and_old_checkpoints(tmp_path, pretrained):
    multi = DeTrack.pretrained(denoise_steps=4)
    assert multi.config.denoise_steps == 4 and pretrained.config.denoise_steps == 1
    with pytest.raises(ValueError, match="cannot override"):
        DeTrack.pretrained(dim=32)
    ck = torch.load(_weights_path(), weights_only=True)
    ck["format"] = "fasttrack.detrack/1"
    torch.save(ck, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="format 1 predates"):
        DeTrack.from_checkpoint(tmp_path / "old.pt")


# ----------------------------------------------------------------------------- command line
def test_cli_train_eval_and_demo(tmp_path, capsys):
    from cli_helpers import run_cli

    rc, out, err = run_cli(capsys, "train", "detrack", "--steps", 2, "--batch", 2, "--eval-every", 1,
                           "--val-sequences", 1, "--out", tmp_path / "run", "--no-progress",
                           "--threads", 1, "--device", "cpu")
    assert rc == 0, err
    assert "curve (minutes, val AO)" in out and (tmp_path / "run" / "detrack.pt").is_file()
    rc, out, err = run_cli(capsys, "eval", "synthetic:test", "--tracker", "detrack", "--frames", 3,
                           "--out", tmp_path / "ev", "--threads", 1, "--device", "cpu")
    assert rc == 0, err
    assert (tmp_path / "ev" / "detrack" / "test-000" / "test-000_001.txt").is_file()
    assert "results of detrack on 12 of 12 sequences" in out
    rc, out, err = run_cli(capsys, "demo", "--frames", 4, "--sequence", 3, "--out", tmp_path / "demo",
                           "--threads", 1, "--device", "cpu")
    assert rc == 0, err
    assert "held-out synthetic sequence test-003" in out and "trained on synthetic and photo" in out
    from PIL import Image

    img = np.asarray(Image.open(tmp_path / "demo" / "00000004.png"))  # on frame 1 red covers green
    colours = {tuple(c) for c in img.reshape(-1, 3)}
    assert (40, 220, 40) in colours and (255, 40, 40) in colours


def test_eval_synthetic_spec_picks_split_count_and_length(tmp_path, capsys):
    """synthetic:SPLIT:NUMxFRAMES tracks exactly those sequences (names and frame counts from
    synthetic_split, read back from the toolkit files), and bad specs name the form."""
    from cli_helpers import run_cli
    from fasttrack.commands.evaluate import parse_synthetic

    assert parse_synthetic("synthetic:test") == ("test", None, None)
    assert parse_synthetic("synthetic:val:48x60") == ("val", 48, 60)
    assert parse_synthetic("synthetic:val:5") == ("val", 5, None)
    rc, out, err = run_cli(capsys, "eval", "synthetic:val:3x5", "--tracker", "detrack",
                           "--out", tmp_path / "ev", "--threads", 1, "--device", "cpu")
    assert rc == 0, err
    assert "results of detrack on 3 of 3 sequences" in out
    for i in range(3):
        boxes = np.loadtxt(tmp_path / "ev" / "detrack" / f"val-{i:03d}" / f"val-{i:03d}_001.txt",
                           delimiter=",")
        assert boxes.shape == (5, 4)
    assert not (tmp_path / "ev" / "detrack" / "val-003").exists()
    for bad, needle in [("synthetic:foo", "synthetic:SPLIT:NUMxFRAMES"),
                        ("synthetic:val:48x", "synthetic:SPLIT:NUMxFRAMES"),
                        ("synthetic:val:3:4", "synthetic:SPLIT:NUMxFRAMES"),
                        ("synthetic:val:0", "NUM must be >= 1"),
                        ("synthetic:val:3x1", "FRAMES >= 2")]:
        rc, out, err = run_cli(capsys, "eval", bad, "--tracker", "detrack", "--out", tmp_path / "b")
        assert rc == 2 and needle in err, (bad, err)


@pytest.mark.parametrize("argv, needle", [
    (["train", "detrack", "--out", "{tmp}/r"], "give --minutes or --steps"),
    (["train", "detrack", "--steps", "0", "--out", "{tmp}/r"], "--steps must be >= 1"),
    (["train", "detrack", "--steps", "1", "--resume", "--out", "{tmp}/r"], "--resume: no"),
    (["train", "detrack", "--steps", "1", "--data", "{tmp}/nope", "--out", "{tmp}/r"], "nope"),
    (["eval", "synthetic:nope", "--tracker", "detrack"], "synthetic:SPLIT:NUMxFRAMES"),
    (["demo", "--sequence", "12"], "--sequence must be in [0, 11]"),
])
def test_cli_train_errors(argv, needle, tmp_path, capsys):
    from cli_helpers import run_cli

    rc, out, err = run_cli(capsys, *[a.format(tmp=tmp_path) for a in argv], "--device", "cpu")
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
