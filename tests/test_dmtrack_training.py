"""DMTrack's training loop and CLI, a from-scratch training run that must beat the static box on
held-out sequences, and the shipped weights (they track the held-out test split, patched equals
unpatched, batched equals single, K samplings as a run option)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fasttrack.data.synthetic import synthetic_split  # noqa: E402
from fasttrack.eval import metrics  # noqa: E402
from fasttrack.patch import patch, unpatch  # noqa: E402
from fasttrack.trackers import DMTrack  # noqa: E402
from fasttrack.train import heldout_ao  # noqa: E402
from fasttrack.train.dmtrack import DMTrackTrainOptions, train_dmtrack  # noqa: E402


def _static_ao(seqs) -> float:
    """AO of holding the first box: the baseline a tracker must beat."""
    return float(np.mean([metrics(np.repeat(s.gt[:1], len(s), 0), s.gt, skip_first=True)["ao"]
                          for s in seqs]))


# The CI budget: TRAIN_STEPS steps of the tiny model on one thread, and the held-out AO they must
# reach. Measured (2-core CPU, torch 2.13, one thread, the machine shared with training runs) on
# the synthetic split without the colour cue: AO 0.577 on the 4 test sequences x 30 frames
# against the static box's 0.091 (the split before, with the cue: 0.872). The bar leaves room
# for another machine's floating-point order.
TRAIN_STEPS = 500
TRAIN_MIN_AO = 0.45


def test_training_from_scratch_beats_the_static_box(tmp_path):
    torch.set_num_threads(1)
    opts = DMTrackTrainOptions(steps=TRAIN_STEPS, eval_every=TRAIN_STEPS, val_sequences=2,
                               out=str(tmp_path / "run"), progress=False, seed=0)
    result = train_dmtrack(opts, log=lambda *_: None)
    held_out = synthetic_split("test", num=4, num_frames=30)
    ao = heldout_ao(result["tracker"], held_out)["ao"]
    static = _static_ao(held_out)
    assert ao >= TRAIN_MIN_AO and ao > static + 0.3, (ao, static)
    curve = json.loads((tmp_path / "run" / "curve.json").read_text())
    assert curve[-1]["step"] == TRAIN_STEPS


def test_train_loop_checkpoints_resumes_and_rejects_bad_options(tmp_path):
    out = tmp_path / "run"
    common = dict(batch_size=2, val_sequences=1, val_frames=4, out=str(out), progress=False)
    first = train_dmtrack(DMTrackTrainOptions(steps=3, eval_every=2, **common), log=lambda *_: None)
    assert [c["step"] for c in first["curve"]] == [2, 3]
    meta = torch.load(out / "dmtrack.pt", weights_only=True)["meta"]
    assert meta["recipe"]["mask_module"] == "diffusion" and meta["recipe"]["double_sample"]
    logs = []
    resumed = train_dmtrack(DMTrackTrainOptions(steps=4, eval_every=2, resume=True, **common),
                            log=logs.append)
    assert any("resumed" in line and "step 3" in line for line in logs)
    assert [c["step"] for c in resumed["curve"]] == [2, 3, 4]
    with pytest.raises(ValueError, match="another model"):
        train_dmtrack(DMTrackTrainOptions(steps=5, resume=True, mask_module="none", **common))
    with pytest.raises(ValueError, match="other double_sample"):       # the objective is kept
        train_dmtrack(DMTrackTrainOptions(steps=5, resume=True, double_sample=False, **common))
    for bad, match in ((dict(steps=None), "--minutes or --steps"), (dict(steps=1, config="huge"), "config"),
                       (dict(steps=1, mask_module="unet"), "--mask-module"),
                       (dict(steps=1, text_drop=1.5), "--text-drop"),
                       (dict(steps=1, ce_keep=0.0), "--ce-keep")):
        with pytest.raises(ValueError, match=match):
            train_dmtrack(DMTrackTrainOptions(**{**common, **bad}))


# --------------------------------------------------------------------------- shipped weights
@pytest.fixture(scope="module")
def pretrained():
    return DMTrack.pretrained()


def _weights_path():
    from importlib import resources

    return resources.files("fasttrack.trackers.dmtrack").joinpath("weights", "dmtrack_tiny.pt")


def test_pretrained_tracks_held_out_sequences(pretrained):
    held_out = synthetic_split("test", num=4)
    res = heldout_ao(pretrained, held_out)
    meta = torch.load(_weights_path(), weights_only=True)["meta"]
    assert res["ao"] > _static_ao(held_out) + 0.3
    assert abs(res["ao"] - meta["test4_ao"]) < 1e-3, (res, meta["test4_ao"])
    # on all 12 test sequences, and on the held-out photographs, well above the static box
    assert meta["test"]["ao"] > meta["static_test_ao"] + 0.3
    assert meta["photos_test"]["ao"] > meta["static_photos_test_ao"] + 0.15


def test_pretrained_patched_equals_unpatched_and_batched_equals_single(pretrained):
    seq = synthetic_split("test", num=1, num_frames=12, start=2)[0]
    ref, _ = pretrained.run(seq, seq.gt[0], progress=False)
    patch(pretrained, backend="torch")
    try:
        out, _ = pretrained.run(seq, seq.gt[0], progress=False)
    finally:
        unpatch(pretrained)
    np.testing.assert_allclose(out, ref, atol=1e-3)
    boxes = np.array([seq.gt[0], seq.gt[0] + [5, 3, 0, 0], [10, 12, 20, 18]], np.float32)
    pretrained.init_batch(seq[0], boxes, text=seq.text)
    batched = np.stack([pretrained.update_batch(f) for f in list(seq)[1:6]], 1)
    for i in range(3):
        pretrained.init(seq[0], boxes[i], text=seq.text)
        single = np.stack([pretrained.update(f) for f in list(seq)[1:6]])
        np.testing.assert_allclose(batched[i], single, atol=1e-3)


def test_pretrained_run_options(pretrained):
    k5 = DMTrack.pretrained(samples=5)
    assert k5.config.samples == 5 and pretrained.config.samples == 1
    with pytest.raises(ValueError, match="cannot override"):
        DMTrack.pretrained(dim=32)
    with pytest.raises(ValueError, match="max_samples"):
        DMTrack.pretrained(samples=99)


# ----------------------------------------------------------------------------- command line
def test_cli_train_track_and_eval(tmp_path, capsys):
    from cli_helpers import run_cli

    rc, out, err = run_cli(capsys, "train", "dmtrack", "--steps", 2, "--batch", 2, "--eval-every", 1,
                           "--val-sequences", 1, "--val-frames", 4, "--out", tmp_path / "run",
                           "--no-progress", "--threads", 1)
    assert rc == 0, err
    assert (tmp_path / "run" / "dmtrack.pt").is_file() and "curve" in out
    rc, out, err = run_cli(capsys, "train", "dmtrack", "--box-head", "center", "--steps", 1)
    assert rc == 2 and "--box-head do not apply to dmtrack" in err
    rc, out, err = run_cli(capsys, "train", "detrack", "--config", "dmtrack256", "--steps", 1)
    assert rc == 2 and "not a detrack size" in err
    rc, out, err = run_cli(capsys, "eval", "synthetic:test:2x6", "--tracker", "dmtrack",
                           "--out", tmp_path / "res", "--threads", 1)
    assert rc == 0, err
    assert "dmtrack" in out
    from fasttrack.commands.dataset import write_synthetic

    write_synthetic(tmp_path / "got", num=1, frames=4, size=(96, 128))
    seq_dir = next(p for p in (tmp_path / "got").iterdir() if p.is_dir())
    rc, out, err = run_cli(capsys, "track", seq_dir, "--tracker", "dmtrack", "--text", "the red box",
                           "--out", tmp_path / "trk", "--no-annotate", "--threads", 1)
    assert rc == 0, err
    rc, out, err = run_cli(capsys, "track", seq_dir, "--tracker", "detrack", "--text", "red",
                           "--out", tmp_path / "trk2")
    assert rc == 2 and "--text applies to --tracker dmtrack" in err


def test_training_reads_descriptions_from_real_layouts(tmp_path):
    """--data with a TNL2K folder: the sampled items carry its language.txt."""
    from test_text import tnl2k_sequence

    from fasttrack.train import TrainingData
    from fasttrack.trackers.dmtrack.train import sample_batch

    tnl2k_sequence(tmp_path / "tnl2k", "seqA", "the man in a red coat")
    tnl2k_sequence(tmp_path / "tnl2k", "seqB", None)
    data = TrainingData([str(tmp_path / "tnl2k")], seed=0)
    batch = sample_batch(data.sequences, 8, DMTrack.tiny().config,
                         generator=np.random.default_rng(0), text_drop=0.0)
    assert set(batch["texts"]) == {"the man in a red coat", None}
    assert batch["search"].shape == (8, 3, 64, 64)
