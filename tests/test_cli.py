"""The `fasttrack` command line: track, eval (single, --workers, --distributed over gloo), demo,
dataset synth, the tracker registry, and one-line user errors. Tiny DeTrack, few frames."""

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fasttrack.cli import main
from fasttrack.data import load_got10k, read_boxes, synthetic_sequence
from fasttrack.eval import pool_metrics

FRAMES = 5


def run_cli(capsys, *argv):
    """main(argv) -> (status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """3 synthetic sequences of FRAMES frames in GOT-10k layout, written by the CLI."""
    root = tmp_path_factory.mktemp("synth")
    assert main(["dataset", "synth", str(root), "--num", "3", "--frames", str(FRAMES),
                 "--seed", "4"]) == 0
    return root


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    """Single-process `fasttrack eval` of `data`: the output folder."""
    out = tmp_path_factory.mktemp("eval-single")
    assert main(["eval", str(data), "--tracker", "detrack", "--out", str(out)]) == 0
    return out


def result_files(out: Path, names) -> dict:
    return {n: (out / "detrack" / n / f"{n}_001.txt").read_text() for n in names}


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


def test_eval_writes_toolkit_layout_and_metrics(data, single, capsys):
    from fasttrack.commands.common import run_sequence
    from fasttrack.trackers.registry import build_tracker

    seqs = load_got10k(data)
    tracker = build_tracker("detrack")
    pairs = []
    for s in seqs:
        boxes = read_boxes(single / "detrack" / s.name / f"{s.name}_001.txt")
        times = np.loadtxt(single / "detrack" / s.name / f"{s.name}_time.txt")
        assert boxes.shape == (FRAMES, 4) and times.shape == (FRAMES,) and (times > 0).all()
        np.testing.assert_array_equal(boxes[0], s.gt[0])
        direct, _ = run_sequence(tracker, s, s.gt[0], progress=False)
        np.testing.assert_allclose(boxes, direct, atol=6e-4)
        pairs.append((boxes, s.eval_gt))
    summary = json.loads((single / "detrack_metrics.json").read_text())
    expect = pool_metrics(pairs, average="frame", skip_first=True)
    for k in ("ao", "sr50", "success_auc", "precision"):
        assert summary["overall"][k] == pytest.approx(expect[k], abs=2e-3), k
    assert summary["overall"]["num_frames"] == 3 * (FRAMES - 1)
    for plot in ("detrack_success.png", "detrack_precision.png"):
        assert (single / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_prints_table(data, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "eval", data, "--tracker", "detrack", "--out", tmp_path,
                           "--frames", 3, "--name", "short")
    assert rc == 0
    assert "SR0.5" in out and "synthetic-5" in out and "FPS" in out
    assert read_boxes(tmp_path / "short" / "synthetic-4" / "synthetic-4_001.txt").shape == (3, 4)
    overall = json.loads((tmp_path / "short_metrics.json").read_text())["overall"]
    assert f"AO {overall['ao']:.3f}" in out and overall["num_frames"] == 3 * 2


def test_eval_workers_match_single(data, single, tmp_path):
    assert main(["eval", str(data), "--tracker", "detrack", "--out", str(tmp_path),
                 "--workers", "2"]) == 0
    names = (data / "list.txt").read_text().split()
    assert result_files(tmp_path, names) == result_files(single, names)


def _dist_rank(rank, world_size, port, argv):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from fasttrack.cli import main as cli_main

    assert cli_main(argv) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_eval_distributed_gloo_matches_single(data, single, tmp_path):
    argv = ["eval", str(data), "--tracker", "detrack", "--out", str(tmp_path), "--distributed",
            "--device", "cpu", "--timeout-min", "5"]
    torch.multiprocessing.spawn(_dist_rank, args=(2, _free_port(), argv), nprocs=2, join=True)
    names = (data / "list.txt").read_text().split()
    assert result_files(tmp_path, names) == result_files(single, names)
    dist = json.loads((tmp_path / "detrack_metrics.json").read_text())
    ref = json.loads((single / "detrack_metrics.json").read_text())
    assert dist["overall"] == ref["overall"]
    assert [r["name"] for r in dist["sequences"]] == names


def test_distributed_sharding_and_env_errors():
    from fasttrack.commands.distributed import env_config, shard

    assert shard("abcde", 1, 2) == [(1, "b"), (3, "d")]
    assert shard("abcde", 0, 2) == [(0, "a"), (2, "c"), (4, "e")]
    env = dict(RANK="1", WORLD_SIZE="2", MASTER_ADDR="h", MASTER_PORT="29500")
    assert env_config(env) == (1, 2)
    with pytest.raises(ValueError, match="missing: MASTER_PORT"):
        env_config({k: v for k, v in env.items() if k != "MASTER_PORT"})
    with pytest.raises(ValueError, match="RANK < WORLD_SIZE"):
        env_config({**env, "RANK": "2"})


def write_otb(root: Path, name: str, seq) -> None:
    (root / name / "img").mkdir(parents=True)
    for i in range(len(seq)):
        Image.fromarray(seq[i]).save(root / name / "img" / f"{i + 1:04d}.png")
    np.savetxt(root / name / "groundtruth_rect.txt", seq.gt, fmt="%d", delimiter="\t")


def test_eval_otb_layout(tmp_path, capsys):
    write_otb(tmp_path / "otb", "Car", synthetic_sequence(4, seed=1))
    write_otb(tmp_path / "otb", "Dog", synthetic_sequence(4, seed=2))
    rc, out, _ = run_cli(capsys, "eval", tmp_path / "otb", "--tracker", "detrack",
                         "--out", tmp_path / "res")
    assert rc == 0 and "success" in out and "prec@20" in out
    for name in ("Car", "Dog"):
        assert read_boxes(tmp_path / "res" / "detrack" / f"{name}.txt").shape == (4, 4)
        assert np.loadtxt(tmp_path / "res" / "detrack" / "times" / f"{name}_time.txt").shape == (4,)


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
    from fasttrack.trackers import DeTrack

    DeTrack.tiny(seed=3).save(tmp_path / "d3.pt")
    src = data / "synthetic-6"
    common = ["track", src, "--tracker", "detrack", "--no-annotate"]
    assert run_cli(capsys, *common, "--weights", tmp_path / "d3.pt", "--out", tmp_path / "w")[0] == 0
    assert run_cli(capsys, *common, "--seed", 3, "--out", tmp_path / "s3")[0] == 0
    assert run_cli(capsys, *common, "--out", tmp_path / "s0")[0] == 0
    w = (tmp_path / "w" / "synthetic-6.txt").read_text()
    assert w == (tmp_path / "s3" / "synthetic-6.txt").read_text()
    assert w != (tmp_path / "s0" / "synthetic-6.txt").read_text()


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

    assert tracker_names() == ["detrack", "diff-tracker", "dintr"]
    with pytest.raises(ValueError, match="detrack, diff-tracker, dintr"):
        build_tracker("ostrack")
    assert fasttrack.is_patched(build_tracker("detrack"))
    assert not fasttrack.is_patched(build_tracker("detrack", patched=False))


@pytest.mark.parametrize("argv, needle", [
    (["track", "{tmp}/nope", "--tracker", "detrack"], "nope"),
    (["track", "{seq}", "--tracker", "detrack", "--box", "1,2,3"], "--box"),
    (["track", "{seq}", "--tracker", "detrack", "--box", "900,9,5,5"], "--box 900,9,5,5 lies outside"),
    (["track", "{seq}", "--tracker", "detrack", "--weights", "{tmp}/bad.pt"], "bad.pt"),
    (["track", "{seq}", "--tracker", "dintr", "--weights", "{tmp}"], "not a diffusers"),
    (["track", "{data}", "--tracker", "detrack"], "holds 3 sequences"),
    (["track", "{tmp}/imgs", "--tracker", "detrack"], "pass --box"),
    (["track", "{tmp}/imgs", "--tracker", "detrack", "--box", "1,1,4,4", "--no-annotate"],
     "cannot read image"),
    (["eval", "{tmp}/imgs", "--tracker", "detrack"], "no ground truth"),
    (["eval", "{tmp}/badgt", "--tracker", "detrack"], "groundtruth.txt:2"),
    (["eval", "{data}", "--tracker", "detrack", "--workers", "0"], "--workers"),
    (["eval", "{data}", "--tracker", "detrack", "--distributed"], "RANK"),
    (["eval", "{data}", "--tracker", "detrack", "--workers", "2", "--weights", "{tmp}/bad.pt"],
     "bad.pt' is not a readable DeTrack checkpoint"),
    (["dataset", "synth", "{tmp}/x", "--size", "big"], "--size"),
])
def test_user_errors_are_one_line(argv, needle, data, tmp_path, capsys, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "imgs" / "1.png")
    (tmp_path / "imgs" / "2.png").write_bytes(b"broken")
    (tmp_path / "badgt" / "s").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "badgt" / "s" / "1.png")
    (tmp_path / "badgt" / "s" / "groundtruth.txt").write_text("1,1,4,4\n1,2\n")
    fill = dict(tmp=tmp_path, seq=data / "synthetic-4", data=data)
    rc, out, err = run_cli(capsys, *[a.format(**fill) for a in argv])
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and lines, err
    assert lines[-1].startswith(f"fasttrack {argv[0]}: error: ") and needle in lines[-1]
    assert "Traceback" not in err
