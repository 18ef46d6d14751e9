"""One-pass evaluation (OPE) metrics of single-object trackers, in numpy.

Boxes are ``[x, y, w, h]`` float pixels, 0-based (DESIGN.md section 3); a box covers the
continuous region ``[x, x + w) x [y, y + h)``. Arrays of boxes have shape (N, 4).

Conventions, following the toolkits of the papers:

- IoU is the continuous overlap (GOT-10k toolkit ``rect_iou``), without the "+1 pixel" of the old
  OTB MATLAB code. Widths/heights below zero count as zero; a row with a non-finite value, or two
  empty boxes, has IoU 0.
- Centre error is the Euclidean distance between box centres ``(x + w/2, y + h/2)``; the OTB
  ``(w - 1)/2`` centre gives the same difference. The normalized centre error (LaSOT) divides the
  x and y centre offsets by the ground-truth w and h before taking the norm. A non-finite
  prediction gives an infinite error (it fails every threshold).
- Success curve: fraction of frames with IoU > t (strictly), for t in ``np.linspace(0, 1, 21)``;
  its mean is the success AUC (OTB). Precision curves: fraction with error <= t, for t in
  ``np.arange(0, 51)`` px (precision = value at 20 px) and, normalized, t in
  ``np.linspace(0, 0.5, 51)`` (normalized precision = value at 0.2).
- GOT-10k: AO = mean IoU, SR0.5 / SR0.75 = fraction of frames with IoU > 0.5 / 0.75.

Valid frames: every quantity in this module that compares a prediction with the ground truth is
computed only on frames whose ground-truth row is finite with w > 0 and h > 0 (LaSOT marks absent
targets with NaN or zero boxes, OTB with zero boxes; put NaN in frames that a GOT-10k
``absence.label`` marks absent, which ``Sequence.eval_gt`` does). The denominators count valid
frames only. ``skip_first=True`` also drops frame 0, as the GOT-10k toolkit does (the first frame
is the initialization). Predictions are never dropped: an invalid prediction is a failure.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
PRECISION_THRESHOLDS = np.arange(0, 51, dtype=np.float64)
NORM_PRECISION_THRESHOLDS = np.linspace(0.0, 0.5, 51)

__all__ = [
    "SUCCESS_THRESHOLDS", "PRECISION_THRESHOLDS", "NORM_PRECISION_THRESHOLDS", "iou",
    "center_error", "normalized_center_error", "valid_mask", "success_curve", "precision_curve",
    "normalized_precision_curve", "metrics", "pool_metrics",
]


def _boxes(x, name: str) -> np.ndarray:
    """Check and convert an (N, 4) array-like of boxes to float64; ValueError naming ``name``."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an (N, 4) array of boxes: {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {arr.shape}")
    return arr


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = _boxes(pred, "pred"), _boxes(gt, "gt")
    if len(p) != len(g):
        raise ValueError(f"pred has {len(p)} boxes but gt has {len(g)}: lengths must match")
    return p, g


def iou(a, b) -> np.ndarray:
    """Intersection over union of paired boxes.

    Args:
        a, b: (N, 4) boxes [x, y, w, h].
    Returns:
        (N,) float64 in [0, 1]; 0 for rows with a non-finite value or an empty union.
    """
    a, b = _boxes(a, "a"), _boxes(b, "b")
    if len(a) != len(b):
        raise ValueError(f"a has {len(a)} boxes but b has {len(b)}: lengths must match")
    finite = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    a = np.where(finite[:, None], a, 0.0)
    b = np.where(finite[:, None], b, 0.0)
    aw, ah = np.maximum(a[:, 2], 0.0), np.maximum(a[:, 3], 0.0)
    bw, bh = np.maximum(b[:, 2], 0.0), np.maximum(b[:, 3], 0.0)
    iw = np.minimum(a[:, 0] + aw, b[:, 0] + bw) - np.maximum(a[:, 0], b[:, 0])
    ih = np.minimum(a[:, 1] + ah, b[:, 1] + bh) - np.maximum(a[:, 1], b[:, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    union = aw * ah + bw * bh - inter
    ok = finite & (union > 0)
    out = np.zeros(len(a))
    out[ok] = inter[ok] / union[ok]
    return out


def _offsets(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre offsets (dx, dy) of pred from gt and the rows where both are finite."""
    finite = np.isfinite(pred).all(1) & np.isfinite(gt).all(1)
    with np.errstate(invalid="ignore"):
        dx = (pred[:, 0] + pred[:, 2] / 2) - (gt[:, 0] + gt[:, 2] / 2)
        dy = (pred[:, 1] + pred[:, 3] / 2) - (gt[:, 1] + gt[:, 3] / 2)
    return dx, dy, finite


def center_error(pred, gt) -> np.ndarray:
    """Distance in pixels between the centres of pred and gt boxes.

    Args:
        pred, gt: (N, 4) boxes.
    Returns:
        (N,) float64; inf where either row has a non-finite value.
    """
    pred, gt = _pair(pred, gt)
    dx, dy, finite = _offsets(pred, gt)
    return np.where(finite, np.hypot(np.where(finite, dx, 0), np.where(finite, dy, 0)), np.inf)


def normalized_center_error(pred, gt) -> np.ndarray:
    """Centre error with the x / y offsets divided by the gt width / height (LaSOT).

    Args:
        pred, gt: (N, 4) boxes.
    Returns:
        (N,) float64; inf where a row is non-finite or the gt w or h is <= 0.
    """
    pred, gt = _pair(pred, gt)
    dx, dy, ok = _offsets(pred, gt)
    ok &= (gt[:, 2] > 0) & (gt[:, 3] > 0)
    w = np.where(ok, gt[:, 2], 1.0)
    h = np.where(ok, gt[:, 3], 1.0)
    return np.where(ok, np.hypot(np.where(ok, dx, 0) / w, np.where(ok, dy, 0) / h), np.inf)


def valid_mask(gt, skip_first: bool = False) -> np.ndarray:
    """Frames that count in the evaluation: finite gt with w > 0 and h > 0.

    Args:
        gt: (N, 4) ground-truth boxes.
        skip_first: also drop frame 0 (GOT-10k toolkit).
    Returns:
        (N,) bool.
    """
    gt = _boxes(gt, "gt")
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(gt).all(1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)
    if skip_first and len(ok):
        ok[0] = False
    return ok


def _valid_pair(pred, gt, skip_first: bool) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = _pair(pred, gt)
    ok = valid_mask(gt, skip_first)
    if not ok.any():
        raise ValueError("gt has no valid frame (finite, w > 0 and h > 0) to evaluate on")
    return pred[ok], gt[ok]


def _rate_above(values: np.ndarray, thresholds) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    return (values[:, None] > t[None, :]).mean(0)


def _rate_within(values: np.ndarray, thresholds) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    return (values[:, None] <= t[None, :]).mean(0)


def success_curve(pred, gt, thresholds=SUCCESS_THRESHOLDS, skip_first: bool = False) -> np.ndarray:
    """Fraction of valid frames with IoU > t for each threshold t.

    Args:
        pred, gt: (N, 4) boxes. thresholds: (T,) IoU thresholds.
    Returns:
        (T,) float64; its mean over the default 21 thresholds is the success AUC.
    """
    p, g = _valid_pair(pred, gt, skip_first)
    return _rate_above(iou(p, g), thresholds)


def precision_curve(pred, gt, thresholds=PRECISION_THRESHOLDS, skip_first: bool = False) -> np.ndarray:
    """Fraction of valid frames with centre error <= t pixels.

    Args:
        pred, gt: (N, 4) boxes. thresholds: (T,) in pixels.
    Returns:
        (T,) float64.
    """
    p, g = _valid_pair(pred, gt, skip_first)
    return _rate_within(center_error(p, g), thresholds)


def normalized_precision_curve(pred, gt, thresholds=NORM_PRECISION_THRESHOLDS,
                               skip_first: bool = False) -> np.ndarray:
    """Fraction of valid frames with normalized centre error <= t (LaSOT).

    Args:
        pred, gt: (N, 4) boxes. thresholds: (T,) normalized distances.
    Returns:
        (T,) float64.
    """
    p, g = _valid_pair(pred, gt, skip_first)
    return _rate_within(normalized_center_error(p, g), thresholds)


def metrics(pred, gt, skip_first: bool = False) -> dict[str, float]:
    """All scalar metrics of one sequence, on its valid frames.

    Args:
        pred, gt: (N, 4) boxes; gt rows that are not valid (see module doc) are skipped.
        skip_first: drop frame 0 as well (GOT-10k toolkit).
    Returns:
        dict with "success_auc" (mean of the 21-point success curve), "precision" (error <= 20 px),
        "norm_precision" (normalized error <= 0.2), "ao" (mean IoU), "sr50" and "sr75" (IoU > 0.5,
        > 0.75), all floats in [0, 1], and "num_frames" (number of valid frames used).
    """
    p, g = _valid_pair(pred, gt, skip_first)
    ious = iou(p, g)
    err = center_error(p, g)
    nerr = normalized_center_error(p, g)
    return {
        "success_auc": float(_rate_above(ious, SUCCESS_THRESHOLDS).mean()),
        "precision": float(np.mean(err <= 20.0)),
        "norm_precision": float(np.mean(nerr <= 0.2)),
        "ao": float(ious.mean()),
        "sr50": float(np.mean(ious > 0.5)),
        "sr75": float(np.mean(ious > 0.75)),
        "num_frames": int(len(ious)),
    }


def pool_metrics(pairs: Iterable[tuple], average: str = "sequence",
                 skip_first: bool = False) -> dict[str, float]:
    """Metrics over a data set of sequences.

    "success_auc", "precision" and "norm_precision" are averaged over sequences (each sequence
    weighs the same, as in the OTB and LaSOT toolkits). "ao", "sr50" and "sr75" follow
    ``average``: "sequence" averages the per-sequence values (each sequence weighs the same);
    "frame" pools the IoUs of all valid frames of all sequences, as the GOT-10k toolkit's
    ``report`` does (long sequences weigh more).

    Args:
        pairs: iterable of (pred, gt), each (N_i, 4).
        average: "sequence" or "frame".
        skip_first: drop each sequence's frame 0 (GOT-10k toolkit).
    Returns:
        dict with the keys of :func:`metrics` ("num_frames" summed) plus "num_sequences".
    """
    if average not in ("sequence", "frame"):
        raise ValueError(f"average must be 'sequence' or 'frame', got {average!r}")
    per_seq, all_ious = [], []
    for i, item in enumerate(pairs):
        try:
            pred, gt = item
        except (TypeError, ValueError):
            raise ValueError(f"pairs[{i}] must be a (pred, gt) pair") from None
        try:
            per_seq.append(metrics(pred, gt, skip_first))
            all_ious.append(iou(*_valid_pair(pred, gt, skip_first)))
        except ValueError as exc:
            raise ValueError(f"pairs[{i}]: {exc}") from None
    if not per_seq:
        raise ValueError("pairs is empty")
    out = {k: float(np.mean([m[k] for m in per_seq])) for k in per_seq[0] if k != "num_frames"}
    if average == "frame":
        ious = np.concatenate(all_ious)
        out.update(ao=float(ious.mean()), sr50=float(np.mean(ious > 0.5)),
                   sr75=float(np.mean(ious > 0.75)))
    out["num_frames"] = int(sum(m["num_frames"] for m in per_seq))
    out["num_sequences"] = len(per_seq)
    return out
