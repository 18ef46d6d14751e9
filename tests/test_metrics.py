"""Metrics against hand-computed values and an independent pixel-counting IoU; plots."""

import importlib
import sys

import numpy as np
import pytest

# the package re-exports the function `metrics`, which shadows the submodule attribute
M = importlib.import_module("fasttrack.eval.metrics")

# Four frames worked out by hand (see the comments on each row).
GT4 = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 4, 2]], dtype=np.float64)
PRED4 = np.array([
    [0, 0, 2, 2],    # identical: IoU 1, centre error 0
    [1, 1, 2, 2],    # inter 1, union 4 + 4 - 1 = 7: IoU 1/7; error sqrt(2); normalized sqrt(0.5)
    [100, 0, 2, 2],  # disjoint: IoU 0; error 100
    [0, 0, 2, 2],    # inter 4, union 8: IoU 1/2; centres (1,1) vs (2,1): error 1; normalized 1/4
], dtype=np.float64)
IOU4 = np.array([1.0, 1 / 7, 0.0, 0.5])
# IoU > t over t = 0, .05, ..., 1: 3 frames for t < 1/7 (3 thresholds), 2 for 1/7 <= t < 1/2
# (7 thresholds), 1 for 1/2 <= t < 1 (10 thresholds, 0.5 is not > 0.5), 0 at t = 1.
SUCC4 = np.array([3] * 3 + [2] * 7 + [1] * 10 + [0]) / 4
AUC4 = (9 + 14 + 10) / 4 / 21  # = 8.25 / 21
AO4 = (1 + 1 / 7 + 0 + 0.5) / 4  # = 23 / 56


def test_iou_hand_values():
    a = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 4, 4], [5, 5, 1, 1]], float)
    b = np.array([[1, 1, 2, 2], [1, 0, 2, 2], [2, 0, 2, 2], [1, 1, 2, 2], [5, 5, 1, 1]], float)
    np.testing.assert_allclose(M.iou(a, b), [1 / 7, 1 / 3, 0.0, 0.25, 1.0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(M.iou(b, a), M.iou(a, b), rtol=0, atol=1e-15)


def test_iou_degenerate_rows():
    a = np.array([[0, 0, 2, 2], [np.nan, 0, 2, 2], [0, 0, 0, 0], [0, 0, -2, 2], [0, 0, 2, np.inf]])
    b = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [0, 0, 0, 0], [0, 0, 2, 2], [0, 0, 2, 2]])
    np.testing.assert_array_equal(M.iou(a, b), [1.0, 0.0, 0.0, 0.0, 0.0])


def test_iou_matches_pixel_counting():
    rng = np.random.default_rng(3)
    a = np.concatenate([rng.integers(0, 12, (200, 2)), rng.integers(1, 9, (200, 2))], 1)
    b = np.concatenate([rng.integers(0, 12, (200, 2)), rng.integers(1, 9, (200, 2))], 1)
    yy, xx = np.mgrid[0:24, 0:24]

    def mask(r):
        return (xx >= r[0]) & (xx < r[0] + r[2]) & (yy >= r[1]) & (yy < r[1] + r[3])

    ref = [(mask(p) & mask(q)).sum() / (mask(p) | mask(q)).sum() for p, q in zip(a, b)]
    np.testing.assert_allclose(M.iou(a, b), ref, rtol=1e-12)


def test_center_errors_hand_values():
    pred = np.array([[0, 0, 2, 2], [0, 0, 4, 4], [np.nan, 0, 1, 1]], float)
    gt = np.array([[3, 4, 2, 2], [1, 1, 2, 2], [0, 0, 1, 1]], float)
    np.testing.assert_array_equal(M.center_error(pred, gt), [5.0, 0.0, np.inf])
    pred = np.array([[3, 4, 6, 8], [0, 0, 1, 1], [0, 0, 1, 1]], float)
    gt = np.array([[0, 0, 6, 8], [0, 0, 0, 3], [0, 0, np.nan, 1]], float)
    # offsets (3, 4) / (6, 8) = (0.5, 0.5); zero-width and NaN gt give inf
    np.testing.assert_allclose(M.normalized_center_error(pred, gt), [np.sqrt(0.5), np.inf, np.inf])


def test_perfect_tracking():
    gt = np.array([[10, 20, 30, 40], [11.5, 20.25, 31, 39], [0, 0, 5, 7]], float)
    curve = M.success_curve(gt, gt)
    np.testing.assert_array_equal(curve, [1.0] * 20 + [0.0])  # IoU 1 is not > 1
    m = M.metrics(gt, gt)
    assert m == {"success_auc": 20 / 21, "precision": 1.0, "norm_precision": 1.0, "ao": 1.0,
                 "sr50": 1.0, "sr75": 1.0, "num_frames": 3}


def test_curves_and_metrics_hand_case():
    np.testing.assert_allclose(M.iou(PRED4, GT4), IOU4, atol=1e-15)
    np.testing.assert_allclose(M.success_curve(PRED4, GT4), SUCC4, atol=1e-15)
    prec = M.precision_curve(PRED4, GT4)
    # errors 0, sqrt 2, 100, 1
    np.testing.assert_allclose(prec[:3], [1 / 4, 2 / 4, 3 / 4])
    np.testing.assert_allclose(prec[2:], 3 / 4)
    nprec = M.normalized_precision_curve(PRED4, GT4)
    # normalized errors 0, sqrt(0.5), 50, 0.25: 1 frame up to 0.24, 2 from 0.25 (inclusive) on
    np.testing.assert_allclose(nprec[:25], 1 / 4)
    np.testing.assert_allclose(nprec[25:], 2 / 4)
    m = M.metrics(PRED4, GT4)
    assert m["success_auc"] == pytest.approx(AUC4, abs=1e-15)
    assert m["ao"] == pytest.approx(23 / 56, abs=1e-15)
    assert (m["precision"], m["norm_precision"], m["sr50"], m["sr75"]) == (0.75, 0.25, 0.25, 0.25)
    assert m["num_frames"] == 4


def test_metrics_consistent_with_curves():
    rng = np.random.default_rng(0)
    gt = np.concatenate([rng.uniform(0, 100, (50, 2)), rng.uniform(5, 40, (50, 2))], 1)
    pred = gt + rng.normal(0, 6, gt.shape)
    m = M.metrics(pred, gt)
    assert m["success_auc"] == pytest.approx(M.success_curve(pred, gt).mean(), abs=1e-15)
    assert m["precision"] == M.precision_curve(pred, gt)[20]
    assert m["norm_precision"] == M.normalized_precision_curve(pred, gt)[20]
    ious = M.iou(pred, gt)
    assert m["ao"] == pytest.approx(ious.mean()) and m["sr50"] == np.mean(ious > 0.5)


def test_invalid_gt_frames_are_skipped_and_bad_predictions_fail():
    gt = np.concatenate([GT4, [[np.nan] * 4, [0, 0, 0, 5], [1, 1, 3, -1]]])
    pred = np.concatenate([PRED4, [[0, 0, 1, 1]] * 3])
    assert M.metrics(pred, gt) == M.metrics(PRED4, GT4)
    np.testing.assert_array_equal(M.valid_mask(gt), [1, 1, 1, 1, 0, 0, 0])
    # a NaN prediction on a valid frame counts as a failure, not as a skipped frame
    pred_nan = PRED4.copy()
    pred_nan[0] = np.nan
    m = M.metrics(pred_nan, GT4)
    assert m["ao"] == pytest.approx((1 / 7 + 0.5) / 4) and m["precision"] == 0.5
    assert m["num_frames"] == 4


def test_skip_first():
    m = M.metrics(PRED4, GT4, skip_first=True)
    assert m["ao"] == pytest.approx((1 / 7 + 0.5) / 3) and m["num_frames"] == 3
    assert m["sr50"] == 0.0


def test_pool_metrics():
    perfect = np.array([[0, 0, 4, 4], [2, 2, 4, 4]], float)
    pairs = [(perfect, perfect), (PRED4, GT4)]
    seq = M.pool_metrics(pairs)
    assert seq["ao"] == pytest.approx((1 + AO4) / 2)
    assert seq["success_auc"] == pytest.approx((20 / 21 + AUC4) / 2)
    assert seq["precision"] == pytest.approx((1 + 0.75) / 2)
    assert seq["sr50"] == pytest.approx((1 + 0.25) / 2)
    assert (seq["num_frames"], seq["num_sequences"]) == (6, 2)
    frame = M.pool_metrics(pairs, average="frame")
    assert frame["ao"] == pytest.approx((2 + 4 * AO4) / 6)
    assert frame["sr50"] == pytest.approx(3 / 6) and frame["sr75"] == pytest.approx(3 / 6)
    assert frame["success_auc"] == seq["success_auc"]  # always averaged over sequences


@pytest.mark.parametrize("call, match", [
    (lambda: M.iou(np.zeros((3, 3)), np.zeros((3, 4))), "a must have shape"),
    (lambda: M.iou(np.zeros((3, 4)), np.zeros((2, 4))), "a has 3 boxes but b has 2"),
    (lambda: M.metrics(np.zeros((4,)), GT4), "pred must have shape"),
    (lambda: M.metrics(PRED4, GT4[:3]), "pred has 4 boxes but gt has 3"),
    (lambda: M.metrics(PRED4, [["a", 0, 1, 1]] * 4), "gt must be an"),
    (lambda: M.metrics(PRED4, np.full((4, 4), np.nan)), "no valid frame"),
    (lambda: M.pool_metrics([]), "pairs is empty"),
    (lambda: M.pool_metrics([(PRED4, GT4[:2])]), r"pairs\[0\]: pred has 4"),
    (lambda: M.pool_metrics([(PRED4, GT4)], average="mean"), "average must be"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_plots(tmp_path):
    pytest.importorskip("matplotlib")
    from fasttrack.eval import save_precision_plot, save_success_plot

    curves = {"mixed": (M.SUCCESS_THRESHOLDS, SUCC4),
              "perfect": (M.SUCCESS_THRESHOLDS, M.success_curve(GT4, GT4))}
    path = tmp_path / "sub" / "success.png"
    labels = save_success_plot(curves, path)
    assert labels == ["perfect [0.952]", f"mixed [{AUC4:.3f}]"] == ["perfect [0.952]", "mixed [0.393]"]
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    prec = {"a": (M.PRECISION_THRESHOLDS, M.precision_curve(PRED4, GT4)),
            "b": (M.PRECISION_THRESHOLDS, np.linspace(0, 1, 51))}
    labels = save_precision_plot(prec, tmp_path / "precision.png")
    assert labels == ["a [0.750]", "b [0.400]"]
    with pytest.raises(ValueError, match="outside the thresholds"):
        save_precision_plot(prec, tmp_path / "p.png", at=60)
    with pytest.raises(ValueError, match="same length"):
        save_success_plot({"x": (M.SUCCESS_THRESHOLDS, SUCC4[:5])}, tmp_path / "x.png")


def test_plots_without_matplotlib(tmp_path, monkeypatch):
    from fasttrack.eval import save_success_plot

    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"pip install fasttrack\[plot\]"):
        save_success_plot({"x": (M.SUCCESS_THRESHOLDS, SUCC4)}, tmp_path / "x.png")
