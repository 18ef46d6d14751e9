"""Tracking evaluation: OPE metrics (numpy) and success / precision plots (matplotlib, optional)."""

from .metrics import (
    NORM_PRECISION_THRESHOLDS,
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    center_error,
    iou,
    metrics,
    normalized_center_error,
    normalized_precision_curve,
    pool_metrics,
    precision_curve,
    success_curve,
    valid_mask,
)
from .plots import save_precision_plot, save_success_plot

__all__ = [
    "SUCCESS_THRESHOLDS", "PRECISION_THRESHOLDS", "NORM_PRECISION_THRESHOLDS", "iou",
    "center_error", "normalized_center_error", "valid_mask", "success_curve", "precision_curve",
    "normalized_precision_curve", "metrics", "pool_metrics", "save_success_plot",
    "save_precision_plot",
]
