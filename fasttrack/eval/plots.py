"""Success and precision plots (OTB / LaSOT style) written to image files.

Uses matplotlib's object API with the Agg canvas (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``), so it neither needs a display nor changes the pyplot backend of the caller.
matplotlib is an optional dependency: ``pip install fasttrack[plot]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

__all__ = ["save_success_plot", "save_precision_plot"]

_STYLES = ["-", "--", "-.", ":"]


def _figure():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "fasttrack plots need matplotlib: pip install fasttrack[plot] "
            "(or pip install matplotlib)") from exc
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _curves(curves: Mapping[str, tuple]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict name -> (thresholds, values)")
    out = []
    for name, item in curves.items():
        try:
            t, v = item
        except (TypeError, ValueError):
            raise ValueError(f"curves[{name!r}] must be a (thresholds, values) pair") from None
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if t.shape != v.shape or t.size == 0:
            raise ValueError(f"curves[{name!r}]: thresholds {t.shape} and values {v.shape} "
                             "must be non-empty and of the same length")
        out.append((str(name), t, v))
    return out


def _plot(rows, path, title, xlabel, ylabel, xlim) -> list[str]:
    """Draw rows (label, t, v), best score first; returns the labels in legend order."""
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    labels = []
    for i, (label, t, v) in enumerate(rows):
        ax.plot(t, v, _STYLES[(i // 10) % len(_STYLES)], linewidth=2, label=label)
        labels.append(label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xlim=xlim, ylim=(0.0, 1.02))
    ax.grid(True, alpha=0.4)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path))
    return labels


def save_success_plot(curves: Mapping[str, tuple], path, title: str = "Success plot") -> list[str]:
    """Plot success curves; the legend gives each tracker's AUC (mean of its curve).

    Args:
        curves: name -> (thresholds (T,), success rates (T,)), e.g.
            ``(SUCCESS_THRESHOLDS, success_curve(pred, gt))``.
        path: output image file (format from its suffix, e.g. .png, .pdf).
        title: plot title.
    Returns:
        the legend labels, "name [auc]" with 3 decimals, sorted by decreasing AUC.
    """
    rows = sorted(((n, t, v, float(v.mean())) for n, t, v in _curves(curves)),
                  key=lambda r: -r[3])
    rows = [(f"{n} [{auc:.3f}]", t, v) for n, t, v, auc in rows]
    return _plot(rows, path, title, "Overlap threshold", "Success rate", (0.0, 1.0))


def save_precision_plot(curves: Mapping[str, tuple], path, title: str = "Precision plot",
                        at: float = 20.0, xlabel: str = "Location error threshold (px)") -> list[str]:
    """Plot precision curves; the legend gives each tracker's precision at ``at``.

    For normalized precision pass ``at=0.2`` and an xlabel such as "Normalized distance".

    Args:
        curves: name -> (thresholds (T,), precision rates (T,)), e.g.
            ``(PRECISION_THRESHOLDS, precision_curve(pred, gt))``.
        path: output image file.
        title: plot title. at: threshold reported in the legend (linear interpolation between
            thresholds; must lie within the thresholds' range). xlabel: x-axis label.
    Returns:
        the legend labels, "name [value]" with 3 decimals, sorted by decreasing value.
    """
    rows = []
    for n, t, v in _curves(curves):
        order = np.argsort(t, kind="stable")
        if not t.min() <= at <= t.max():
            raise ValueError(f"at={at} is outside the thresholds of curves[{n!r}] "
                             f"[{t.min()}, {t.max()}]")
        rows.append((n, t, v, float(np.interp(at, t[order], v[order]))))
    rows.sort(key=lambda r: -r[3])
    rows = [(f"{n} [{p:.3f}]", t, v) for n, t, v, p in rows]
    xmax = max(float(t.max()) for _, t, _ in rows)
    return _plot(rows, path, title, xlabel, "Precision", (0.0, xmax))
