"""Metrics, the printed table and the plots of `fasttrack eval` (fasttrack.eval underneath).

Sequences whose ground truth has no valid frame to score (the GOT-10k test split gives only the
first box) get FPS but no metrics, and are left out of the overall numbers and the curves.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["sequence_metrics", "print_report", "save_plots"]


def sequence_metrics(results, seqs, skip_first: bool) -> dict:
    """Per-sequence and overall metrics of eval results.

    Args:
        results: dicts with "index" (into seqs), "name", "boxes" (N, 4), "times" (N,).
        seqs: the data set's sequences. skip_first: drop frame 0 (GOT-10k toolkit); also makes
            the overall AO / SR pool frames (GOT-10k) instead of averaging sequences (OTB, LaSOT).
    Returns:
        {"rows": per-sequence dicts, "overall": pool_metrics dict or None, "fps": overall FPS,
         "curves": (success (21,), precision (51,)) averaged over scored sequences or None,
         "json": the JSON-ready summary}.
    """
    from ..eval import metrics, pool_metrics, precision_curve, success_curve, valid_mask

    rows, pairs, succ, prec = [], [], [], []
    for r in results:
        n = len(r["boxes"])
        gt = seqs[r["index"]].eval_gt[:n]
        row = {"name": r["name"], "frames": n, "fps": n / float(np.sum(r["times"]))}
        if valid_mask(gt, skip_first).any():
            row.update(metrics(r["boxes"], gt, skip_first))
            pairs.append((r["boxes"], gt))
            succ.append(success_curve(r["boxes"], gt, skip_first=skip_first))
            prec.append(precision_curve(r["boxes"], gt, skip_first=skip_first))
        rows.append(row)
    frames = sum(len(r["boxes"]) for r in results)
    fps = frames / float(sum(np.sum(r["times"]) for r in results))
    overall = None
    if pairs:
        overall = pool_metrics(pairs, average="frame" if skip_first else "sequence",
                               skip_first=skip_first)
    curves = (np.mean(succ, 0), np.mean(prec, 0)) if pairs else None
    summary = {"overall": overall, "fps": fps, "frames": frames, "sequences": rows,
               "skip_first": skip_first}
    return {"rows": rows, "overall": overall, "fps": fps, "curves": curves, "json": summary}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def print_report(report: dict, got10k: bool) -> None:
    """Print one line per sequence and the overall line."""
    cols = ["ao", "sr50", "sr75"] if got10k else ["success_auc", "precision", "norm_precision"]
    heads = ["AO", "SR0.5", "SR0.75"] if got10k else ["success", "prec@20", "norm.prec"]
    width = max(12, *(len(r["name"]) for r in report["rows"]))
    print(f"{'sequence':<{width}}  {'frames':>6}  " + "  ".join(f"{h:>9}" for h in heads)
          + f"  {'FPS':>7}")
    for r in report["rows"]:
        print(f"{r['name']:<{width}}  {r['frames']:>6}  "
              + "  ".join(f"{_fmt(r.get(c)):>9}" for c in cols) + f"  {r['fps']:>7.1f}")
    o = report["overall"]
    total = sum(r["frames"] for r in report["rows"])
    if o is None:
        print(f"{'all':<{width}}  {total:>6}  (no ground truth after the first frame: no metrics)"
              f"  {report['fps']:>7.1f}")
        return
    print(f"{'all':<{width}}  {total:>6}  " + "  ".join(f"{_fmt(o[c]):>9}" for c in cols)
          + f"  {report['fps']:>7.1f}")
    print(f"overall: success AUC {o['success_auc']:.3f}, precision@20px {o['precision']:.3f}, "
          f"normalized precision {o['norm_precision']:.3f}, AO {o['ao']:.3f}, SR0.5 "
          f"{o['sr50']:.3f}, SR0.75 {o['sr75']:.3f} ({o['num_sequences']} sequences, "
          f"{o['num_frames']} scored frames); {report['fps']:.1f} FPS")


def save_plots(report: dict, out: Path, name: str) -> str:
    """Save <out>/<name>_success.png and <name>_precision.png; returns a line saying what was
    written (or why nothing was)."""
    from ..eval import PRECISION_THRESHOLDS, SUCCESS_THRESHOLDS

    if report["curves"] is None:
        return "plots: none (no ground truth to score)"
    try:
        from ..eval import save_precision_plot, save_success_plot

        succ, prec = report["curves"]
        a = Path(out) / f"{name}_success.png"
        b = Path(out) / f"{name}_precision.png"
        save_success_plot({name: (SUCCESS_THRESHOLDS, succ)}, a)
        save_precision_plot({name: (PRECISION_THRESHOLDS, prec)}, b)
    except ImportError as exc:
        return f"plots: none ({exc})"
    return f"plots: {a}, {b}"
