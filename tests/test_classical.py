"""OpenCV's KCF and CSRT behind the Tracker API (fasttrack.trackers.classical): they follow an
easy moving target (IoU computed here, against the ground truth the test draws itself), K boxes
track like K single-box runs, PIL / tensor frames like numpy ones, float boxes are rounded as
documented, a failed update keeps the last box, bad devices / weights / precisions / boxes are
ValueErrors, and `fasttrack eval` / `track` run them from the command line."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from cli_helpers import FRAMES, NAMES, run_cli, write_synth
from PIL import Image

cv2 = pytest.importorskip("cv2")

import fasttrack  # noqa: E402
from fasttrack.trackers.classical import OpenCVTracker, require_cv2, to_cv2_rect  # noqa: E402
from fasttrack.trackers.registry import TRACKERS, build_tracker  # noqa: E402

cv2.setNumThreads(1)  # keep OpenCV's own pool small, like the torch thread count of the suite

KINDS = ["kcf", "csrt"]
NUM = 30            # frames of the test sequence
SIZE = (117, 171)   # (H, W): odd on purpose


def _sequence():
    """Frames (NUM of SIZE, RGB uint8) over a smooth, slightly noisy background, with two
    blocky random-texture targets drawn at integer positions moving about 1.5 px per frame; and
    their exact boxes (2, NUM, 4) [x, y, w, h]."""
    rng = np.random.default_rng(7)
    H, W = SIZE
    yy, xx = np.mgrid[0:H, 0:W]
    wave = np.sin(xx / 23.0) * np.cos(yy / 31.0)
    bg = 90 + 40 * wave[..., None] * np.array([1.0, 0.7, 0.4]) + rng.normal(0, 4, (H, W, 3))
    bg = bg.clip(0, 255).astype(np.uint8)
    sprites = [np.kron(rng.integers(0, 256, (7, 8, 3)), np.ones((3, 3, 1)))[:19, :23],
               np.kron(rng.integers(0, 256, (8, 6, 3)), np.ones((3, 3, 1)))[:21, :17]]
    starts, vel = [(20.0, 30.0), (120.0, 70.0)], [(1.4, 0.5), (-1.2, -0.7)]
    frames, gt = [], np.zeros((2, NUM, 4))
    for t in range(NUM):
        f = bg.copy()
        for k, sp in enumerate(sprites):
            x = int(round(starts[k][0] + vel[k][0] * t))
            y = int(round(starts[k][1] + vel[k][1] * t + 3 * np.sin(t / 5)))
            h, w = sp.shape[:2]
            f[y:y + h, x:x + w] = sp.astype(np.uint8)
            gt[k, t] = [x, y, w, h]
        frames.append(f)
    return frames, gt


def _iou(a, b) -> np.ndarray:
    """IoU of [x, y, w, h] boxes, row by row (written here, independent of fasttrack.eval)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    x0, y0 = np.maximum(a[..., 0], b[..., 0]), np.maximum(a[..., 1], b[..., 1])
    x1 = np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2])
    y1 = np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter)


@pytest.fixture(scope="module")
def seq():
    return _sequence()


@pytest.fixture(scope="module")
def single_runs(seq):
    """{(kind, target): (NUM, 4) boxes of a single-box run}."""
    frames, gt = seq
    out = {}
    for kind in KINDS:
        for k in range(2):
            boxes, times = OpenCVTracker(kind).run(frames, gt[k, 0], progress=False)
            assert boxes.shape == (NUM, 4) and boxes.dtype == np.float32 and (times > 0).all()
            out[kind, k] = boxes
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_follows_a_slowly_moving_target(kind, seq, single_runs):
    _, gt = seq
    for k in range(2):
        boxes = single_runs[kind, k]
        np.testing.assert_array_equal(boxes[0], gt[k, 0])
        tracked = _iou(boxes[1:], gt[k, 1:]).mean()
        static = _iou(np.repeat(gt[k, :1], NUM - 1, 0), gt[k, 1:]).mean()
        assert static < 0.3, static                   # the target does move away from its start
        assert tracked > 0.6 and tracked > static + 0.4, (kind, k, tracked, static)
        assert _iou(boxes[-1], gt[k, -1]) > 0.5       # still on it at the end


@pytest.mark.parametrize("kind", KINDS)
def test_batch_of_two_equals_two_single_runs(kind, seq, single_runs):
    frames, gt = seq
    tr = OpenCVTracker(kind)
    tr.init_batch(frames[0], gt[:, 0])
    rows = [gt[:, 0].astype(np.float32)]
    for f in frames[1:]:
        rows.append(tr.update_batch(f))
        assert tr.scores.shape == (2,)
    batch = np.stack(rows, 1)                         # (2, NUM, 4)
    for k in range(2):
        np.testing.assert_array_equal(batch[k], single_runs[kind, k])


@pytest.mark.parametrize("kind", KINDS)
def test_pil_and_tensor_frames_track_like_numpy(kind, seq, single_runs):
    frames, gt = seq
    n = 10
    tr = OpenCVTracker(kind)
    tr.init(Image.fromarray(frames[0]), gt[0, 0])
    pil = [tr.update(Image.fromarray(f)) for f in frames[1:n]]
    np.testing.assert_array_equal(np.stack(pil), single_runs[kind, 0][1:n])
    # tensors, one of them a non-contiguous view (channels reversed twice)
    tensors = [torch.from_numpy(f) for f in frames[:n]]
    tensors[1] = torch.from_numpy(np.ascontiguousarray(frames[1][..., ::-1])).flip(-1)
    boxes, _ = tr.run(tensors, gt[0, 0], progress=False)
    np.testing.assert_array_equal(boxes[1:], single_runs[kind, 0][1:n])


def test_csrt_sees_bgr_frames_like_opencv_itself(seq, single_runs):
    """cv2 wants BGR; CSRT's color features tell the channel orders apart on this sequence."""
    frames, gt = seq
    n = 12

    def direct(convert):
        tr = cv2.TrackerCSRT_create()
        tr.init(convert(frames[0]), tuple(int(v) for v in gt[0, 0]))
        return np.array([tr.update(convert(f))[1] for f in frames[1:n]], np.float32)

    bgr = direct(lambda f: cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(single_runs["csrt", 0][1:n], bgr)
    assert (direct(lambda f: f) != bgr).any()         # RGB fed as is would track differently


def test_float_boxes_are_rounded_at_the_corners_and_clipped():
    assert to_cv2_rect([10.4, 20.6, 30.2, 25.5], (100, 100)) == (10, 21, 31, 25)
    assert to_cv2_rect([-5.2, -3.0, 20.0, 10.4], (50, 60)) == (0, 0, 15, 7)   # clipped to the frame
    assert to_cv2_rect([55.7, 40.0, 30.0, 30.0], (50, 60)) == (56, 40, 4, 10)
    # what OpenCV starts from: on the init frame itself, KCF answers with that rect
    frame = np.random.default_rng(1).integers(0, 256, (61, 83, 3), dtype=np.uint8)
    tr = OpenCVTracker("kcf")
    tr.init(frame, [10.4, 20.6, 30.2, 25.5])
    np.testing.assert_array_equal(tr.update(frame), [10, 21, 31, 25])
    tr.init(frame, [-4.6, -4.6, 20.0, 20.0])         # partly outside the frame: allowed
    np.testing.assert_array_equal(tr.update(frame), [0, 0, 15, 15])


@pytest.mark.parametrize("kind", KINDS)
def test_failed_update_keeps_the_last_box(kind):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    blank = np.full_like(frame, 128)                  # the target is gone: OpenCV reports failure
    box = [20.3, 15.2, 21.0, 17.0]
    for steps in ([blank, blank, blank], [frame, blank, blank, blank]):
        tr = OpenCVTracker(kind)
        tr.init(frame, box)
        last, scores = np.float32(box), []
        for f in steps:
            out = tr.update(f)
            scores.append(tr.score)
            if tr.score == 0.0:                       # failure: the previous box, unchanged
                np.testing.assert_array_equal(out, last)
            else:
                assert tr.score == 1.0 and _iou(out, box) > 0.8
            last = out
        assert 0.0 in scores, scores                  # OpenCV did report a failure
        assert scores[-1] == 0.0 and _iou(last, box) > 0.8   # never OpenCV's (0, 0, 0, 0)


def test_bad_inputs_are_value_errors(seq, tmp_path):
    frames, gt = seq
    for device in ("cuda", "cuda:0", "meta", "no-such-device"):
        with pytest.raises(ValueError, match="CPU only"):
            OpenCVTracker("kcf", device=device)
    with pytest.raises(ValueError, match="CPU only"):
        build_tracker("csrt", device="cuda")
    with pytest.raises(ValueError, match="kind must be one of kcf, csrt"):
        OpenCVTracker("mosse")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    for name in KINDS:
        with pytest.raises(ValueError, match=f"the {name} tracker takes no weights"):
            build_tracker(name, weights=weights)
        with pytest.raises(ValueError, match="takes no weights"):   # a missing path: same answer
            build_tracker(name, weights=tmp_path / "missing.pt")
    for precision in ("bf16", "fp16", "tf32"):
        with pytest.raises(ValueError, match="precision must be fp32"):
            build_tracker("kcf", precision=precision)
        with pytest.raises(ValueError, match="precision must be fp32"):
            OpenCVTracker("csrt").set_precision(precision)
    assert OpenCVTracker("csrt").set_precision("fp32").precision == "fp32"
    tr = OpenCVTracker("kcf")
    with pytest.raises(ValueError, match=r"box = \[10.0, 10.0, 0.5, 12.0\] is under one pixel"):
        tr.init(frames[0], [10, 10, 0.5, 12])
    with pytest.raises(ValueError, match=r"boxes\[1\] .* under one pixel"):
        tr.init_batch(frames[0], [[10, 10, 12, 12], [30, 30, 12, 0.5]])
    with pytest.raises(ValueError, match="width and height must be > 0"):   # the base check
        tr.init(frames[0], [10, 10, 0, 12])
    with pytest.raises(ValueError, match="init"):
        OpenCVTracker("kcf").update(frames[0])


def test_missing_opencv_is_a_one_line_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)    # `import cv2` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "fasttrack\[classical\]"') as exc:
        require_cv2()
    assert "\n" not in str(exc.value)


def test_registry_builds_them_and_patch_has_nothing_to_do(seq):
    frames, gt = seq
    for name in KINDS:
        assert not TRACKERS[name].patchable and TRACKERS[name].cpu_only
        tr = build_tracker(name)                      # patched=True, the default
        assert isinstance(tr, OpenCVTracker) and tr.kind == name
        assert not fasttrack.is_patched(tr)
        assert fasttrack.patch(tr) is tr and fasttrack.unpatch(tr) is tr
        boxes, _ = tr.run(frames[:4], gt[0, 0], progress=False)
        assert _iou(boxes[3], gt[0, 3]) > 0.5
    for name in TRACKERS:                             # the learned trackers are unaffected
        if name not in KINDS:
            assert TRACKERS[name].patchable and not TRACKERS[name].cpu_only


def test_commands_default_them_to_the_cpu():
    from fasttrack.commands.common import default_device

    gpu = "cuda" if torch.cuda.is_available() else "cpu"
    assert [default_device(None, n) for n in KINDS] == ["cpu", "cpu"]
    assert default_device(None, "detrack") == default_device(None) == gpu
    assert default_device("cpu", "kcf") == "cpu"


# ------------------------------------------------------------ the command line

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synth(tmp_path_factory.mktemp("synth"))


def test_eval_cli_with_csrt_writes_metrics_with_ao(data, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "eval", data, "--tracker", "csrt", "--out", tmp_path,
                           "--threads", 1)
    assert rc == 0, err
    assert "eval: csrt on 3 sequences, cpu" in out    # the CPU, even where a GPU is present
    summary = json.loads((tmp_path / "csrt_metrics.json").read_text())
    overall = summary["overall"]
    assert 0.0 <= overall["ao"] <= 1.0 and overall["num_frames"] == 3 * (FRAMES - 1)
    assert f"AO {overall['ao']:.3f}" in out and summary["failed"] == {}
    for n in NAMES:
        lines = (tmp_path / "csrt" / n / f"{n}_001.txt").read_text().splitlines()
        assert len(lines) == FRAMES
    print(f"csrt AO on the synthetic CLI data: {overall['ao']:.3f}")


def test_track_cli_and_help_list_them(data, tmp_path, capsys):
    rc, out, err = run_cli(capsys, "track", data / NAMES[0], "--tracker", "kcf", "--out", tmp_path,
                           "--no-annotate", "--threads", 1)
    assert rc == 0, err
    assert "with kcf (nothing to patch, cpu" in out
    assert np.loadtxt(tmp_path / f"{NAMES[0]}.txt", delimiter=",").shape == (FRAMES, 4)
    rc, _, err = run_cli(capsys, "track", data / NAMES[0], "--tracker", "csrt", "--out", tmp_path,
                         "--weights", tmp_path / f"{NAMES[0]}.txt")
    assert rc == 2 and "takes no weights" in err and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli(capsys, "track", data / NAMES[0], "--tracker", "csrt", "--out", tmp_path,
                         "--precision", "bf16")
    assert rc == 2 and "precision must be fp32" in err
    rc, _, err = run_cli(capsys, "demo", "--tracker", "kcf")
    assert rc == 2 and "nothing to patch" in err
    with pytest.raises(SystemExit):
        run_cli(capsys, "track", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "kcf (KCF" in text and "csrt (CSRT" in text and "--weights: none" in text
