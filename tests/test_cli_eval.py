"""`fasttrack eval`: toolkit layout and metrics, single process, --workers and --distributed
(gloo); a sequence that fails (a corrupt frame, a tracker error) is reported and skipped, the
others' results are written, and --resume tracks only what is missing. Tiny DeTrack, 5 frames.

The reference is always the clean single-process run (`single`): files of the other modes must
match it byte for byte, and the metrics must match pool_metrics of its files."""

import json
import os
import shutil
import socket
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import FRAMES, NAMES, result_files, run_cli, write_synth
from PIL import Image

from fasttrack.cli import main
from fasttrack.commands.common import default_device, default_threads, run_label
from fasttrack.data import load_got10k, read_boxes, synthetic_sequence
from fasttrack.eval import pool_metrics


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synth(tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    """Single-process `fasttrack eval` of `data`: the output folder."""
    out = tmp_path_factory.mktemp("eval-single")
    assert main(["eval", str(data), "--tracker", "detrack", "--out", str(out)]) == 0
    return out


def test_eval_writes_toolkit_layout_and_metrics(data, single):
    from fasttrack.trackers.registry import build_tracker

    seqs = load_got10k(data)
    tracker = build_tracker("detrack")
    pairs = []
    for s in seqs:
        boxes = read_boxes(single / "detrack" / s.name / f"{s.name}_001.txt")
        times = np.loadtxt(single / "detrack" / s.name / f"{s.name}_time.txt")
        assert boxes.shape == (FRAMES, 4) and times.shape == (FRAMES,) and (times > 0).all()
        np.testing.assert_array_equal(boxes[0], s.gt[0])
        direct, _ = tracker.run(s, s.gt[0], progress=False)
        np.testing.assert_allclose(boxes, direct, atol=6e-4)
        pairs.append((boxes, s.eval_gt))
    summary = json.loads((single / "detrack_metrics.json").read_text())
    expect = pool_metrics(pairs, average="frame", skip_first=True)
    for k in ("ao", "sr50", "success_auc", "precision"):
        assert summary["overall"][k] == pytest.approx(expect[k], abs=2e-3), k
    assert summary["overall"]["num_frames"] == 3 * (FRAMES - 1) and summary["failed"] == {}
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


# ------------------------------------------------------------ failures and --resume

def corrupt(data: Path, tmp_path: Path, names=("synthetic-5",), frame: int = 3):
    """A copy of `data` whose frame `frame` of each of `names` holds garbage bytes: (the copy's
    root, {corrupt file: its original bytes})."""
    root = tmp_path / "data"
    shutil.copytree(data, root)
    broken = {}
    for name in names:
        path = root / name / f"{frame:08d}.png"
        broken[path] = path.read_bytes()
        path.write_bytes(b"garbage, not a PNG")
    return root, broken


def repair(broken: dict) -> None:
    for path, original in broken.items():
        path.write_bytes(original)


def failure_line(path: Path) -> str:
    return (f"fasttrack eval: error: sequence {path.parent.name} failed: cannot read image "
            f"{path}: not an image file Pillow can decode")


def check_partial(out: Path, single: Path, data: Path, ok: list, failed: list) -> None:
    """The results of `ok` equal the clean run's, `failed` have no result files, and the
    metrics JSON scores exactly `ok` (against pool_metrics of the clean run's files) and lists
    `failed`."""
    assert result_files(out, ok) == result_files(single, ok)
    for name in failed:
        assert not (out / "detrack" / name).exists(), name
    summary = json.loads((out / "detrack_metrics.json").read_text())
    assert [r["name"] for r in summary["sequences"]] == ok
    assert sorted(summary["failed"]) == failed
    expect = pool_metrics([(read_boxes(single / "detrack" / n / f"{n}_001.txt"),
                            read_boxes(data / n / "groundtruth.txt")) for n in ok],
                          average="frame", skip_first=True)
    for k in ("ao", "sr50", "success_auc"):
        assert summary["overall"][k] == pytest.approx(expect[k], abs=1e-3), k


def check_complete(out: Path, single: Path) -> None:
    """Every result file equals the clean run's and the metrics agree with its metrics."""
    assert result_files(out, NAMES) == result_files(single, NAMES)
    summary = json.loads((out / "detrack_metrics.json").read_text())
    ref = json.loads((single / "detrack_metrics.json").read_text())
    assert [r["name"] for r in summary["sequences"]] == NAMES and summary["failed"] == {}
    for k in ("ao", "sr50", "success_auc", "precision"):
        # resumed sequences are scored from their files (3 decimals), the clean run in memory
        assert summary["overall"][k] == pytest.approx(ref["overall"][k], abs=1e-3), k


def mtimes(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*.txt")}



def test_eval_precision_runs_the_tracker_at_that_precision(data, tmp_path, capsys):
    """--precision bf16: the boxes written are those of the tracker set to bf16 run directly
    (and not the float32 ones); a bad value is a one-line argparse error naming the option."""
    from fasttrack.trackers.registry import build_tracker

    rc, out, err = run_cli(capsys, "eval", data, "--tracker", "detrack", "--out", tmp_path,
                           "--frames", 4, "--precision", "bf16", "--name", "half")
    assert rc == 0
    seq = load_got10k(data)[0]
    got = read_boxes(tmp_path / "half" / seq.name / f"{seq.name}_001.txt")
    direct, _ = build_tracker("detrack", precision="bf16").run(seq, seq.gt[0], progress=False, limit=4)
    full, _ = build_tracker("detrack").run(seq, seq.gt[0], progress=False, limit=4)
    np.testing.assert_allclose(got, direct, atol=6e-4)
    assert not np.allclose(direct, full, atol=1e-3)
    with pytest.raises(SystemExit):
        main(["eval", str(data), "--tracker", "detrack", "--precision", "fp8"])
    assert "--precision" in capsys.readouterr().err

def test_eval_survives_a_corrupt_frame_then_resumes(data, single, tmp_path, capsys):
    root, broken = corrupt(data, tmp_path)
    [bad] = broken
    out = tmp_path / "res"
    # an earlier run's results are there: the failed sequence's must not survive this run
    shutil.copytree(single / "detrack", out / "detrack")
    rc, stdout, err = run_cli(capsys, "eval", root, "--tracker", "detrack", "--out", out)
    assert rc == 1 and "Traceback" not in err
    assert [ln for ln in err.splitlines() if "synthetic-5" in ln] == [failure_line(bad)]
    assert err.splitlines()[-1].startswith("fasttrack eval: error: 1 of 3 sequences failed")
    label = run_label(default_device(None), default_threads())
    assert f"eval: detrack on 3 sequences, {label}" in stdout
    check_partial(out, single, data, ["synthetic-4", "synthetic-6"], ["synthetic-5"])

    # synthetic-4's boxes cut short (as by a crash while writing): not finished either
    cut = out / "detrack" / "synthetic-4" / "synthetic-4_001.txt"
    cut.write_text("".join(cut.read_text().splitlines(keepends=True)[:2]))
    kept = mtimes(out / "detrack" / "synthetic-6")
    repair(broken)
    rc, stdout, err = run_cli(capsys, "eval", root, "--tracker", "detrack", "--out", out,
                              "--resume")
    assert rc == 0 and "error" not in err
    assert "--resume: 1 of 3 sequences already in" in stdout
    tracked = [ln.split(":")[0] for ln in stdout.splitlines() if ln.startswith("[")]
    assert tracked == ["[1/2] synthetic-4", "[2/2] synthetic-5"]
    assert mtimes(out / "detrack" / "synthetic-6") == kept  # read back, not rewritten
    check_complete(out, single)


def test_eval_tracker_errors_name_the_sequence(data, tmp_path, capsys, monkeypatch):
    """An exception that is no user error (a tracker bug) fails only its sequence, reported by
    type, message and where it was raised; each result is on disk before the next sequence
    starts; when every sequence fails, no metrics are written."""
    from fasttrack.trackers.base import Tracker

    real = Tracker.run
    written_before = {}

    def flaky(tracker, seq, box, **kw):
        written_before[seq.name] = sorted(p.name for p in tmp_path.rglob("*_001.txt"))
        if seq.name == "synthetic-6" or fail_all:
            raise RuntimeError("tracker blew up")
        return real(tracker, seq, box, **kw)

    monkeypatch.setattr(Tracker, "run", flaky)
    fail_all = False
    rc, out, err = run_cli(capsys, "eval", data, "--tracker", "detrack", "--out", tmp_path,
                           "--frames", 2)
    line = next(ln for ln in err.splitlines() if "synthetic-6" in ln)
    assert rc == 1 and line.startswith("fasttrack eval: error: sequence synthetic-6 failed: "
                                       "RuntimeError: tracker blew up (at ")
    assert "test_cli_eval.py:" in line and "Traceback" not in err
    summary = json.loads((tmp_path / "detrack_metrics.json").read_text())
    assert sorted(summary["failed"]) == ["synthetic-6"]
    assert written_before == {"synthetic-4": [], "synthetic-5": ["synthetic-4_001.txt"],
                              "synthetic-6": ["synthetic-4_001.txt", "synthetic-5_001.txt"]}
    fail_all = True
    rc, out, err = run_cli(capsys, "eval", data, "--tracker", "detrack", "--out", tmp_path / "all",
                           "--frames", 2)
    assert rc == 1 and "3 of 3 sequences failed; no metrics" in err
    assert not (tmp_path / "all" / "detrack_metrics.json").exists()


def test_eval_workers_survive_failures_then_resume(data, single, tmp_path, capsys):
    root, broken = corrupt(data, tmp_path, names=("synthetic-4", "synthetic-5"))
    out = tmp_path / "res"
    rc, stdout, err = run_cli(capsys, "eval", root, "--tracker", "detrack", "--out", out,
                              "--workers", 2)
    assert rc == 1 and "Traceback" not in err
    for path in broken:
        assert failure_line(path) in err.splitlines()
    assert run_label(default_device(None), default_threads(2), 2) in stdout
    check_partial(out, single, data, ["synthetic-6"], ["synthetic-4", "synthetic-5"])
    repair(broken)
    rc, stdout, err = run_cli(capsys, "eval", root, "--tracker", "detrack", "--out", out,
                              "--workers", 2, "--resume")
    assert rc == 0 and "--resume: 1 of 3 sequences already in" in stdout
    assert "eval: detrack on 2 sequences" in stdout and "2 workers" in stdout
    check_complete(out, single)


def _dist_rank(rank, world_size, port, argv, logs, expect):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from fasttrack.cli import main as cli_main

    with open(logs / f"{rank}.out", "w") as o, open(logs / f"{rank}.err", "w") as e:
        with redirect_stdout(o), redirect_stderr(e):
            rc = cli_main(argv)
    assert rc == expect[rank], (rank, rc)


def _distributed(argv, logs: Path, expect) -> list:
    """Run `argv` on 2 gloo ranks; returns [(stdout, stderr)] by rank."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logs.mkdir()
    torch.multiprocessing.spawn(_dist_rank, args=(2, port, argv, logs, expect), nprocs=2, join=True)
    return [((logs / f"{r}.out").read_text(), (logs / f"{r}.err").read_text()) for r in range(2)]


def test_eval_distributed_survives_a_failure_then_resumes(data, single, tmp_path):
    root, broken = corrupt(data, tmp_path)  # synthetic-5 is index 1: rank 1's
    [bad] = broken
    out = tmp_path / "res"
    argv = ["eval", str(root), "--tracker", "detrack", "--out", str(out), "--distributed",
            "--device", "cpu", "--timeout-min", "5"]
    logs = _distributed(argv, tmp_path / "logs", expect=(1, 1))
    assert failure_line(bad) in logs[0][1].splitlines()  # rank 0 reports rank 1's failure
    assert "[rank 1] [1/1] synthetic-5: failed: cannot read image" in logs[1][0]
    check_partial(out, single, data, ["synthetic-4", "synthetic-6"], ["synthetic-5"])
    repair(broken)
    logs = _distributed(argv + ["--resume"], tmp_path / "logs2", expect=(0, 0))
    assert "[rank 0] --resume: 2 of its 2 sequences already in" in logs[0][0]
    assert "[rank 1] [1/1] synthetic-5: 5 frames" in logs[1][0]
    check_complete(out, single)


def test_eval_distributed_unbuildable_tracker_stops_every_rank(data, tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    argv = ["eval", str(data), "--tracker", "detrack", "--out", str(tmp_path / "res"),
            "--distributed", "--device", "cpu", "--timeout-min", "5",
            "--weights", str(tmp_path / "bad.pt")]
    logs = _distributed(argv, tmp_path / "logs", expect=(2, 2))
    for _, err in logs:
        [line] = err.splitlines()
        assert line.startswith("fasttrack eval: error: rank 0: weights ") and "; rank 1: " in line
        assert "is not a readable DeTrack checkpoint" in line
    assert not (tmp_path / "res" / "detrack").exists()


class DyingFrames:
    """Frames whose second one kills the process reading it (as a crash in native code would)."""

    def __len__(self):
        return 3

    def __getitem__(self, i):
        if i == 1:
            os._exit(3)
        return np.zeros((32, 32, 3), np.uint8)


def test_eval_pool_worker_death_fails_its_sequence(tmp_path):
    from fasttrack.cli import build_parser
    from fasttrack.commands.common import tracker_options
    from fasttrack.commands.evaluate_track import track_pool
    from fasttrack.data import Sequence

    args = build_parser().parse_args(["eval", "x", "--tracker", "detrack"])
    opts = {**tracker_options(args, "cpu"), "frames": None, "root": str(tmp_path), "threads": 1}
    seq = Sequence("dies", DyingFrames(), gt=np.tile([[8.0, 8.0, 8.0, 8.0]], (3, 1)))
    lines = []
    [r] = track_pool([(0, seq)], opts, workers=1, log=lines.append)
    assert r["index"] == 0 and r["name"] == "dies"
    assert r["error"].startswith("its worker process died") and "boxes" not in r
    assert lines == [f"[1/1] dies: failed: {r['error']}"]


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


def test_eval_otb_layout_and_resume(tmp_path, capsys):
    write_otb(tmp_path / "otb", "Car", synthetic_sequence(4, seed=1))
    write_otb(tmp_path / "otb", "Dog", synthetic_sequence(4, seed=2))
    rc, out, _ = run_cli(capsys, "eval", tmp_path / "otb", "--tracker", "detrack",
                         "--out", tmp_path / "res")
    assert rc == 0 and "success" in out and "prec@20" in out
    for name in ("Car", "Dog"):
        assert read_boxes(tmp_path / "res" / "detrack" / f"{name}.txt").shape == (4, 4)
        assert np.loadtxt(tmp_path / "res" / "detrack" / "times" / f"{name}_time.txt").shape == (4,)
    (tmp_path / "res" / "detrack" / "times" / "Dog_time.txt").unlink()
    rc, out, _ = run_cli(capsys, "eval", tmp_path / "otb", "--tracker", "detrack",
                         "--out", tmp_path / "res", "--resume")
    assert rc == 0 and "--resume: 1 of 2" in out and "[1/1] Dog: 4 frames" in out
