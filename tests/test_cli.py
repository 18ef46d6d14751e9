"""The `fasttrack` command line: parsing (negative --box values), track, demo, dataset synth,
the tracker registry, the checked --device, the --threads default, and one-line user errors.
Tiny DeTrack, few frames. `fasttrack eval` is tested in test_cli_eval.py."""

import json

import numpy as np
import pytest
import torch
from cli_helpers import FRAMES, run_cli, write_synth
from PIL import Image

from fasttrack.cli import build_parser, main
from fasttrack.data import load_got10k, read_boxes, synthetic_sequence


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synth(tmp_path_factory.mktemp("synth"))


def test_help_on_every_subcommand(capsys):
    for argv in (["--help"], ["bench", "--help"], ["info", "--help"], ["track", "--help"],
                 ["eval", "--help"], ["demo", "--help"], ["dataset", "--help"],
                 ["dataset", "synth", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: fasttrack"), argv
    with pytest.raises(SystemExit):
        main(["track", "--help"])
    assert "--no-patch" in capsys.readouterr().out


def test_dataset_synth_writes_exact_got10k_layout(data):
    names = (data / "list.txt").read_text().split()
    assert names == ["synthetic-4", "synthetic-5", "synthetic-6"]
    seqs = load_got10k(data)
    ref = synthetic_sequence(FRAMES, size=(128, 160), sprite_size=(32, 32), seed=5)
    assert [s.name for s in seqs] == names and len(seqs[1]) == FRAMES
    np.testing.assert_array_equal(seqs[1].gt, ref.gt)
    for i in (0, FRAMES - 1):
        np.testing.assert_array_equal(seqs[1][i], ref[i])


def test_track_sequence_folder_writes_boxes_and_frames(data, tmp_path, capsys):
    from fasttrack.commands.annotate import BOX_COLOR

    rc, out, _ = run_cli(capsys, "track", data / "synthetic-4", "--tracker", "detrack",
                         "--out", tmp_path)
    assert rc == 0 and "FPS" in out and "vs ground truth" in out
    boxes = read_boxes(tmp_path / "synthetic-4.txt")
    gt = read_boxes(data / "synthetic-4" / "groundtruth.txt")
    assert boxes.shape == (FRAMES, 4)
    np.testing.assert_array_equal(boxes[0], gt[0])
    pngs = sorted((tmp_path / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:08d}.png" for i in range(1, FRAMES + 1)]
    img = np.asarray(Image.open(pngs[2]).convert("RGB"))
    red = (img == BOX_COLOR).all(-1)
    x, y, w, h = boxes[2]
    bottom = int(round(y + h - 1))
    cols = slice(int(np.ceil(x)) + 1, int(x + w) - 1)
    assert red[bottom - 1:bottom + 1, cols].any(0).mean() > 0.9  # the bottom edge is drawn


def test_synth_video_and_track_video_write_mp4(tmp_path, capsys):
    pytest.importorskip("av")
    from fasttrack.data import load_video

    assert main(["dataset", "synth", str(tmp_path / "d"), "--num", "1", "--frames", "6",
                 "--size", "96x128", "--seed", "3", "--video"]) == 0
    capsys.readouterr()
    clip, seq = load_video(tmp_path / "d" / "synthetic-3.mp4"), load_got10k(tmp_path / "d")[0]
    assert len(clip) == 6 and clip[0].shape == (96, 128, 3)
    assert np.abs(clip[4].astype(int) - seq[4]).mean() < 8  # lossy, but the same picture
    box = ",".join(str(int(v)) for v in seq.gt[0])
    rc, out, _ = run_cli(capsys, "track", tmp_path / "d" / "synthetic-3.mp4", "--box", box,
                         "--tracker", "detrack", "--out", tmp_path / "out", "--no-patch")
    assert rc == 0 and "annotated video" in out
    assert read_boxes(tmp_path / "out" / "synthetic-3.txt").shape == (6, 4)
    video = load_video(tmp_path / "out" / "synthetic-3.mp4")
    assert len(video) == 6 and video[5].shape == (96, 128, 3)


def test_track_weights_are_loaded(data, tmp_path, capsys):
    """--weights loads that checkpoint; without it detrack is the shipped trained model."""
    import fasttrack
    from fasttrack.data import open_sequences
    from fasttrack.trackers import DeTrack

    DeTrack.tiny(seed=3).save(tmp_path / "d3.pt")
    src = data / "synthetic-6"
    common = ["track", src, "--tracker", "detrack", "--no-annotate"]
    assert run_cli(capsys, *common, "--weights", tmp_path / "d3.pt", "--out", tmp_path / "w")[0] == 0
    assert run_cli(capsys, *common, "--out", tmp_path / "s0")[0] == 0
    seq = open_sequences(src)[0]

    def boxes_of(tracker):
        b, _ = fasttrack.patch(tracker).track(seq, seq.gt[0], progress=False)
        return np.array([[float(f"{v:.3f}") for v in row] for row in b])

    def read(path):
        return np.loadtxt(path, delimiter=",")

    w, s0 = read(tmp_path / "w" / "synthetic-6.txt"), read(tmp_path / "s0" / "synthetic-6.txt")
    np.testing.assert_allclose(w, boxes_of(DeTrack.from_checkpoint(tmp_path / "d3.pt").eval()), atol=2e-3)
    np.testing.assert_allclose(s0, boxes_of(DeTrack.pretrained()), atol=2e-3)
    assert np.abs(w - s0).max() > 1.0


def test_demo_reports_agreement_and_fps(capsys):
    rc, out, _ = run_cli(capsys, "demo", "--frames", 4, "--warmup", 0, "--per-frame")
    assert rc == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("per-frame agreement"))
    min_iou = float(line.split("min IoU ")[1].split()[0])
    assert min_iou > 0.999
    per_frame = next(ln for ln in out.splitlines() if ln.startswith("frame IoU"))
    assert per_frame.split(": ", 1)[1].split() == [f"{i}:1.0000" for i in range(1, 5)]
    assert "plain PyTorch" in out and "fasttrack" in out


def test_registry():
    import fasttrack
    from fasttrack.trackers.registry import build_tracker, tracker_names

    assert tracker_names() == ["detrack", "diff-tracker", "dintr", "dmtrack", "kcf", "csrt"]
    with pytest.raises(ValueError, match="detrack, diff-tracker, dintr, dmtrack"):
        build_tracker("ostrack")
    for name in ("detrack", "dmtrack"):
        assert fasttrack.is_patched(build_tracker(name))
        assert not fasttrack.is_patched(build_tracker(name, patched=False))


def test_negative_box_values_parse():
    """argparse alone reads "--box -10,..." as a missing value: fasttrack's parser takes it."""
    from fasttrack.commands.common import parse_box

    parser = build_parser()
    for argv in (["--box", "-10,-10,30,30"], ["--box=-10,-10,30,30"], ["--box", "-1e1,-10,30,30"],
                 ["--box", "-10 -10 30 30"]):
        args = parser.parse_args(["track", "s", "--tracker", "detrack", *argv])
        assert parse_box(args.box) == [-10, -10, 30, 30], argv
    assert parser.parse_args(["track", "s", "--box", "10,20,30,40", "--tracker", "detrack",
                              "--seed", "-3"]).box == "10,20,30,40"
    with pytest.raises(SystemExit) as exc:  # an option name is still no value
        parser.parse_args(["track", "s", "--box", "--tracker", "detrack"])
    assert exc.value.code == 2


def test_track_box_partly_outside_the_frame(data, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "track", data / "synthetic-4", "--tracker", "detrack", "--box",
                           "-10,-10,40,40", "--frames", 3, "--no-annotate", "--out", tmp_path)
    assert rc == 0, err
    boxes = read_boxes(tmp_path / "synthetic-4.txt")
    assert boxes.shape == (3, 4) and boxes[0].tolist() == [-10, -10, 40, 40]


def test_track_sets_the_default_threads(data, tmp_path, capsys, monkeypatch):
    """Without --threads, track runs on default_threads() (here 2: 4 CPUs faked), not on
    torch's current count, and says so in its summary line."""
    import os

    from fasttrack.commands.common import default_device, default_threads, run_label

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc, out, err = run_cli(capsys, "track", data / "synthetic-4", "--tracker", "detrack",
                               "--frames", 2, "--no-annotate", "--out", tmp_path)
        threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert rc == 0 and threads == default_threads() == 2
    assert f"(fasttrack kernels, {run_label(default_device(None), 2)})" in out


@pytest.mark.parametrize("argv", [
    ["track", "{seq}", "--tracker", "detrack", "--out", "{tmp}/out"],
    ["eval", "{data}", "--tracker", "detrack", "--out", "{tmp}/out"],
    ["eval", "{data}", "--tracker", "detrack", "--out", "{tmp}/out", "--workers", "2"],
    ["eval", "{data}", "--tracker", "detrack", "--out", "{tmp}/out", "--distributed"],
    ["demo"],
])
@pytest.mark.parametrize("device, needle", [
    ("foo", "--device 'foo' is not a torch device"), ("cuda", "--device cuda: no CUDA device"),
])
def test_device_checked_before_anything(argv, device, needle, data, tmp_path, capsys, monkeypatch):
    """A bad --device (or CUDA on a machine without it) is one line and status 2 before
    anything is read, built, spawned or written."""
    import fasttrack.data
    import fasttrack.trackers.registry

    def untouchable(*args, **kwargs):
        raise AssertionError("used before --device was checked")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for module, name in ((fasttrack.data, "open_sequences"), (fasttrack.data, "synthetic_sequence"),
                         (fasttrack.trackers.registry, "build_tracker")):
        monkeypatch.setattr(module, name, untouchable)
    fill = dict(tmp=tmp_path, seq=data / "synthetic-4", data=data)
    rc, out, err = run_cli(capsys, *[a.format(**fill) for a in argv], "--device", device)
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"fasttrack {argv[0]}: error: {needle}")
    assert not (tmp_path / "out").exists()


def test_synth_video_without_pyav_writes_nothing(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    rc, out, err = run_cli(capsys, "dataset", "synth", tmp_path / "x", "--num", 1, "--frames", 2,
                           "--video")
    assert rc == 2 and err.splitlines() == [
        "fasttrack dataset: error: --video (writing mp4) needs PyAV: pip install av (or pip "
        "install fasttrack[video])"]
    assert not (tmp_path / "x").exists()


# needle: a string, or a tuple of strings, that the one error line must contain
@pytest.mark.parametrize("argv, needle", [
    (["track", "{tmp}/nope", "--tracker", "detrack"], "nope: no such file or folder"),
    (["eval", "{tmp}/nope", "--tracker", "detrack"], "nope: no such file or folder"),
    (["track", "{seq}", "--tracker", "detrack", "--box", "1,2,3"], "--box must be 4 numbers"),
    (["track", "{seq}", "--tracker", "detrack", "--box", "900,9,5,5"],
     ("--box", "lies outside the 160x128 frame")),
    (["track", "{seq}", "--tracker", "detrack", "--box", "0,0,1e9,10"],
     ("--box", "more than 4x the 160x128 frame")),
    (["track", "{seq}", "--tracker", "detrack", "--box", "-10,-10,5,5"],
     ("--box", "lies outside")),
    (["track", "{seq}", "--tracker", "detrack", "--threads", "0"], "--threads must be an int >= 1"),
    (["track", "{seq}", "--tracker", "detrack", "--weights", "{tmp}/bad.pt"], "bad.pt"),
    (["track", "{seq}", "--tracker", "detrack", "--weights", "{tmp}"],
     "is a folder; DeTrack expects a checkpoint FILE"),
    (["track", "{seq}", "--tracker", "detrack", "--weights", "{tmp}/none.pt"],
     "none.pt': no such file or folder (detrack expects a checkpoint file"),
    (["track", "{seq}", "--tracker", "dintr", "--weights", "{tmp}/bad.pt"],
     "bad.pt' is a file; DINTR expects a FOLDER"),
    (["track", "{seq}", "--tracker", "dintr", "--weights", "{tmp}"], "not a diffusers"),
    (["track", "{seq}", "--tracker", "detrack", "--out", "{tmp}/bad.pt"],
     "--out {tmp}/bad.pt is a file; expected a folder"),
    (["track", "{data}", "--tracker", "detrack"], "holds 3 sequences"),
    (["track", "{tmp}/imgs", "--tracker", "detrack"], "pass --box"),
    (["track", "{tmp}/imgs", "--tracker", "detrack", "--box", "1,1,4,4", "--no-annotate"],
     "cannot read image"),
    (["eval", "{tmp}/imgs", "--tracker", "detrack"], "no ground truth"),
    (["eval", "{tmp}/badgt", "--tracker", "detrack"], "groundtruth.txt:2"),
    (["eval", "{tmp}/gtdir", "--tracker", "detrack"],
     ("cannot read ground truth", "groundtruth.txt: is a folder")),
    (["eval", "{tmp}/badlist", "--tracker", "detrack"],
     ("names 'missing'", "missing: no such folder")),
    (["eval", "{data}", "--tracker", "detrack", "--out", "{tmp}/bad.pt"],
     "--out {tmp}/bad.pt is a file; expected a folder"),
    (["eval", "{data}", "--tracker", "detrack", "--workers", "0"], "--workers"),
    (["eval", "{data}", "--tracker", "detrack", "--distributed"], "RANK"),
    (["eval", "{data}", "--tracker", "detrack", "--workers", "2", "--weights", "{tmp}/bad.pt"],
     "bad.pt' is not a readable DeTrack checkpoint"),
    (["dataset", "synth", "{tmp}/x", "--size", "big"], "--size"),
    (["dataset", "synth", "{tmp}/bad.pt"], "OUT {tmp}/bad.pt is a file; expected a folder"),
])
def test_user_errors_are_one_line(argv, needle, data, tmp_path, capsys, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    black = np.zeros((16, 16, 3), np.uint8)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "imgs").mkdir()
    Image.fromarray(black).save(tmp_path / "imgs" / "1.png")
    (tmp_path / "imgs" / "2.png").write_bytes(b"broken")
    for name, gt in (("badgt", "1,1,4,4\n1,2\n"), ("gtdir", None), ("badlist", "1,1,4,4\n")):
        (tmp_path / name / "s").mkdir(parents=True)
        Image.fromarray(black).save(tmp_path / name / "s" / "1.png")
        if gt is None:  # groundtruth.txt is a folder
            (tmp_path / name / "s" / "groundtruth.txt").mkdir()
            (tmp_path / name / "list.txt").write_text("s\n")
        else:
            (tmp_path / name / "s" / "groundtruth.txt").write_text(gt)
    (tmp_path / "badlist" / "list.txt").write_text("s\nmissing\n")
    fill = dict(tmp=tmp_path, seq=data / "synthetic-4", data=data)
    rc, out, err = run_cli(capsys, *[a.format(**fill) for a in argv])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"fasttrack {argv[0]}: error: ")
    for part in (needle,) if isinstance(needle, str) else needle:
        assert part.format(**fill) in lines[0]
    assert "Traceback" not in err


def test_info_says_which_backend_runs_each_op(capsys, monkeypatch):
    monkeypatch.delenv("FASTTRACK_BACKEND", raising=False)
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = {l.split()[1]: l for l in out.splitlines() if l.startswith("backend ")}
    assert set(lines) == {"aten", "cuda", "triton", "torch"}
    assert "attention: ok" in lines["aten"] and "attention and lse only" in lines["aten"]
    assert "attention: ok | self_cross: ok" in lines["torch"]
    if not torch.cuda.is_available():
        assert "auto attention   aten" in out and "auto self_cross  torch" in out
