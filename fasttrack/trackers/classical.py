"""`OpenCVTracker`: OpenCV's classical correlation-filter trackers behind fasttrack's Tracker API,
as baselines beside fasttrack's learned trackers.

    tracker = OpenCVTracker("kcf")              # or "csrt"; build_tracker("kcf") does the same
    tracker.init(frame0, [x, y, w, h])
    box = tracker.update(frame1)                # (4,) float32, 1.0 / 0.0 in tracker.score
    tracker.init_batch(frame0, boxes)           # (K, 4): K independent OpenCV trackers
    boxes = tracker.update_batch(frame1)        # (K, 4)

The two kinds:

- "kcf": KCF, the kernelized correlation filter of Henriques et al. 2015 ("High-Speed Tracking
  with Kernelized Correlation Filters"), `cv2.TrackerKCF_create` with OpenCV's defaults;
- "csrt": CSR-DCF, the discriminative correlation filter with channel and spatial reliability of
  Lukezic et al. 2017, `cv2.TrackerCSRT_create` with OpenCV's defaults.

Both are OpenCV's C++ implementations (opencv-contrib: ``pip install "fasttrack[classical]"``,
i.e. opencv-contrib-python-headless) and run on the CPU only: they have no weights, nothing for
`fasttrack.patch` to swap (patch / unpatch are no-ops on them, `is_patched` is False) and only
one precision, "fp32". Each target box gets its own OpenCV tracker object, so K boxes are K
independent trackers stepped one after the other on each frame.

Conversions, both ways:

- frames arrive as validated RGB (H, W, 3) uint8 numpy arrays or tensors (PIL images are
  converted by the base class); each is copied once into a contiguous BGR numpy array for cv2.
- OpenCV takes integer rects. A float box [x, y, w, h] becomes the rect whose corners are the
  box's corners rounded to the nearest pixel (round half to even: x0 = round(x), x1 =
  round(x + w), likewise y), clipped to the frame (OpenCV's trackers need a region inside the
  image; a box may stick out of the frame) and then at least 1 px wide and high. Boxes must be
  at least one pixel wide and high (ValueError otherwise).
- OpenCV returns integer rects, which are returned as they are ((K, 4) float32, [x, y, w, h]).
  When OpenCV's update reports failure for a target (the filter's peak is too weak: the target
  is lost or occluded), its last box is kept, unchanged, and its score is 0.0; otherwise 1.0.
  OpenCV exposes no finer confidence.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Tracker

__all__ = ["OpenCVTracker", "KINDS", "require_cv2", "to_cv2_rect"]

# kind -> the cv2 factory of its tracker (opencv-contrib's tracking module)
KINDS = {"kcf": "TrackerKCF_create", "csrt": "TrackerCSRT_create"}

INSTALL_HINT = 'pip install "fasttrack[classical]" (opencv-contrib-python-headless)'


def require_cv2():
    """The `cv2` module with opencv-contrib's KCF and CSRT trackers, or ImportError in one line
    naming the extra to install."""
    try:
        import cv2
    except ImportError:
        raise ImportError(f"the kcf and csrt trackers need OpenCV: {INSTALL_HINT}") from None
    missing = [f for f in KINDS.values() if not hasattr(cv2, f)]
    if missing:
        raise ImportError(f"cv2 {getattr(cv2, '__version__', '?')} lacks {', '.join(missing)} "
                          f"(opencv-contrib's tracking module): {INSTALL_HINT}")
    return cv2


def to_cv2_rect(box, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The integer rect (x, y, w, h) OpenCV starts from for a float box [x, y, w, h] in a frame
    of size (H, W): the box's corners rounded to the nearest pixel, clipped to the frame, at
    least 1 x 1 px (see the module docstring)."""
    H, W = frame_size
    x, y, w, h = (float(v) for v in box)
    x0, y0 = min(max(round(x), 0), W - 1), min(max(round(y), 0), H - 1)
    x1, y1 = min(round(x + w), W), min(round(y + h), H)
    return x0, y0, max(x1 - x0, 1), max(y1 - y0, 1)


def _bgr(image) -> np.ndarray:
    """A validated RGB (H, W, 3) uint8 array or tensor as a contiguous BGR (H, W, 3) uint8 numpy
    array (a new array: cv2 never sees the caller's memory)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    return np.ascontiguousarray(image[..., ::-1])


class OpenCVTracker(Tracker):
    """OpenCV's KCF or CSRT tracker (module docstring): one cv2 tracker per target box.

    Args:
        kind: "kcf" or "csrt".
        device: "cpu" (the only one: OpenCV's trackers run on the CPU); anything else is a
            ValueError.
    Attributes: kind, device (torch.device("cpu")), score / scores (1.0 when OpenCV's last
        update found the target, 0.0 when it reported failure and the last box was kept).
    Raises:
        ImportError: cv2 with opencv-contrib's trackers is not installed.
    """

    def __init__(self, kind: str = "kcf", device="cpu"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            dev = None
        if dev is None or dev.type != "cpu":
            raise ValueError(f"device {str(device)!r}: the {kind} tracker (OpenCV) runs on the "
                             "CPU only; use device='cpu'")
        self._cv2 = require_cv2()
        self.kind = kind
        self.device = torch.device("cpu")
        self._trackers: list = []
        self._boxes: np.ndarray | None = None  # (K, 4) float64, the last box of each target

    def __repr__(self) -> str:
        return f"OpenCVTracker(kind={self.kind!r})"

    def set_precision(self, precision: str) -> "OpenCVTracker":
        """Only "fp32" (what OpenCV computes in; a no-op). Returns self. ValueError naming
        `precision` for anything else, "tf32", "bf16" and "fp16" included: they would not change
        OpenCV's computation."""
        if precision != "fp32":
            raise ValueError(f"precision must be fp32 for the {self.kind} tracker (OpenCV, CPU, "
                             f"float32 only), got {precision!r}")
        self.precision = precision
        return self

    def _patch_roots(self) -> tuple:
        """No torch modules: `fasttrack.patch` / `unpatch` change nothing, `is_patched` is False."""
        return ()

    # -- Tracker hooks ----------------------------------------------------------------------
    def _start(self, image, boxes: np.ndarray) -> None:
        """boxes: (K, 4) float64 [x, y, w, h], validated by the base class; each must also be at
        least 1 px wide and high. One new cv2 tracker per row, initialised on `image`."""
        K = boxes.shape[0]
        for i, (_, _, w, h) in enumerate(boxes):
            if w < 1 or h < 1:
                label = "box" if K == 1 else f"boxes[{i}]"
                raise ValueError(f"{label} = {[float(v) for v in boxes[i]]} is under one pixel "
                                 f"(w={float(w)}, h={float(h)}); the {self.kind} tracker (OpenCV) "
                                 "needs boxes at least 1 px wide and high")
        frame = _bgr(image)
        size = (frame.shape[0], frame.shape[1])
        factory = getattr(self._cv2, KINDS[self.kind])
        trackers = []
        for box in boxes:
            tr = factory()
            tr.init(frame, to_cv2_rect(box, size))
            trackers.append(tr)
        self._trackers = trackers
        self._boxes = boxes.astype(np.float64).copy()

    def _advance(self, image) -> tuple[np.ndarray, np.ndarray]:
        """Step every target's cv2 tracker on `image`. Returns boxes (K, 4) float64 [x, y, w, h]
        (OpenCV's integer rect, or the last box where it reported failure) and scores (K,)
        float32 (1.0 found, 0.0 failure)."""
        frame = _bgr(image)
        scores = np.zeros(len(self._trackers), dtype=np.float32)
        for i, tr in enumerate(self._trackers):
            ok, rect = tr.update(frame)
            if ok:
                self._boxes[i] = [float(v) for v in rect]
                scores[i] = 1.0
        return self._boxes.copy(), scores
