"""Training for the diffusion trackers: the tiny-sd trainer and its folder, the word tokenizer,
motion pseudo-labels, Diff-Tracker's updater trainer and both `fasttrack train` commands."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from cli_helpers import run_cli  # noqa: E402
from fasttrack.data.synthetic import synthetic_sequence  # noqa: E402
from fasttrack.eval.metrics import iou  # noqa: E402
from fasttrack.trackers.diffusion.tiny_sd import (TinyTextEncoder, WordTokenizer,  # noqa: E402
                                                  load_text_encoder)
from fasttrack.train.pseudo_labels import motion_pseudo_labels  # noqa: E402
from fasttrack.train.tiny_sd import TinySDOptions, grounded_words, scene_words, train_tiny_sd  # noqa: E402


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory):
    """A few seconds of tiny-sd training on 2 scenes: a real folder, not a useful model."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny-sd")
    log = train_tiny_sd(TinySDOptions(out=str(out), minutes=0.12, scenes=2, frames=2, batch_size=4,
                                      progress=False))
    return out, log


def test_tiny_sd_folder_layout_and_log(tiny_sd_folder):
    out, log = tiny_sd_folder
    for sub in ("vae", "unet", "scheduler", "text_encoder", "tokenizer"):
        assert (out / sub).is_dir(), sub
    assert (out / "null_context.safetensors").is_file()
    assert log["vae"]["steps"] >= 1 and log["unet"]["steps"] >= 1 and log["images"] == 4
    assert log["unet"]["ground_first50"] is not None          # the grounding loss ran
    saved = json.loads((out / "train.json").read_text())
    assert saved["unet"]["steps"] == log["unet"]["steps"]
    # The null context is the saved text encoder's output for the empty prompt.
    from safetensors.torch import load_file

    enc, tok = load_text_encoder(out)
    with torch.no_grad():
        want = enc(tok([""]))
    assert torch.allclose(load_file(out / "null_context.safetensors")["null_context"], want, atol=1e-6)
    # The VAE's scaling factor whitens the training latents' scale (1 / std, as SD's 0.18215).
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(out / "vae")
    assert log["vae"]["scaling_factor"] == pytest.approx(vae.config.scaling_factor)


def test_tiny_sd_folder_loads_into_both_trackers(tiny_sd_folder):
    from fasttrack.trackers import DINTR, DiffTracker
    from fasttrack.trackers.diffusion.tiny_sd import TRACKER_SETTINGS

    out, _ = tiny_sd_folder
    seq = synthetic_sequence(3, size=(72, 88), sprite_size=(20, 24), seed=1)
    settings = {"DiffTracker": dict(TRACKER_SETTINGS["DiffTracker"], prompt_steps=2, use_updater=False),
                "DINTR": dict(TRACKER_SETTINGS["DINTR"], init_steps=2, num_steps=2)}
    for cls in (DiffTracker, DINTR):
        tr = cls.from_pretrained(out, **settings[cls.__name__])
        assert tr.sd.image_size == 64 and tr.sd.latent_size == 32 and tr.resolution == 32
        boxes, _ = tr.run(seq.frames, seq.gt[0], progress=False)
        assert boxes.shape == (3, 4) and np.isfinite(boxes).all()


def test_word_tokenizer_and_encoder(rng):
    tok = WordTokenizer(["red", "box", "the"], length=6)
    ids = tok(["The RED box, huge", "red red red red red red red"])
    r, b, t = tok.index["red"], tok.index["box"], tok.index["the"]
    assert ids[0].tolist() == [1, t, r, b, 3, 2]            # start, words (unknown -> 3), end
    assert ids[1].tolist() == [1, r, r, r, r, 2]            # cut to length - 2 words
    assert tok([""])[0].tolist() == [1, 2, 0, 0, 0, 0]
    enc = TinyTextEncoder(tok.vocab_size, dim=8, length=6, heads=2, hidden=16)
    assert enc(ids).shape == (2, 6, 8)
    words = scene_words()
    assert grounded_words() <= set(words) and "the" in words and "red" in grounded_words()
    assert "the" not in grounded_words()


def test_motion_pseudo_labels_follow_a_moving_sprite():
    seq = synthetic_sequence(16, size=(96, 128), sprite_size=(26, 30), seed=3, background="flat",
                             speed=1.5)
    boxes, scores = motion_pseudo_labels(seq.frames)
    assert boxes.shape == (16, 4) and scores.shape == (16,)
    assert iou(boxes, seq.gt).mean() >= 0.7
    given, _ = motion_pseudo_labels(seq.frames, seq.gt[0])
    assert iou(given, seq.gt).mean() >= 0.7
    with pytest.raises(ValueError, match="at least 3"):
        motion_pseudo_labels(seq.frames[:2])
    with pytest.raises(ValueError, match="cell"):
        motion_pseudo_labels(seq.frames, cell=0)


def test_train_updater_cli_writes_a_loadable_updater(tiny_sd_folder, tmp_path, capsys):
    from fasttrack.trackers import DiffTracker

    sd, _ = tiny_sd_folder
    out = tmp_path / "updater"
    code, text, err = run_cli(capsys, "train", "diff-tracker-updater", "--sd", str(sd), "--epochs", "1",
                         "--sequences", "1", "--frames", "7", "--unlabeled", "synthetic",
                         "--val-sequences", "1", "--val-frames", "3", "--threads", "1",
                         "--prompt-steps", "5", "--no-progress", "--out", str(out))
    assert code == 0, err
    assert "best val AO" in text
    log = json.loads((out / "train.json").read_text())
    assert log["labeled"] == 1 and log["pseudo_labeled"] == 1 and len(log["passes"]) == 1
    assert log["options"]["settings"] == {"prompt_steps": 5}
    assert 0.0 <= log["pseudo_label_iou"] <= 1.0
    tr = DiffTracker.from_pretrained(sd, tracker_path=out)
    assert tr.updater.config["prompt_dim"] == 32 and tr.use_updater


def test_train_cli_rejects_options_of_other_models(capsys):
    for argv, name in ((("tiny-sd", "--box-head", "center", "--minutes", "1"), "--box-head"),
                       (("diff-tracker-updater", "--batch", "8"), "--batch"),
                       (("detrack", "--unlabeled", "synthetic", "--steps", "1"), "--unlabeled"),
                       (("tiny-sd", "--minutes", "0"), "--minutes"),
                       (("tiny-sd", "--prompt-steps", "5", "--minutes", "1"), "--prompt-steps"),
                       (("diff-tracker-updater", "--prompt-steps", "-1", "--epochs", "1"), "--prompt-steps")):
        code, _, err = run_cli(capsys, "train", *argv)
        assert code != 0 and name in err, (argv, err)
