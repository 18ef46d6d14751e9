"""`Tracker`: the base class of fasttrack's trackers (DESIGN.md section 3).

A subclass implements two hooks and inherits the whole public API, its checks and its errors:

    class MyTracker(Tracker):
        max_targets = 1                      # how many targets one forward may track (None: any)

        def _start(self, image, boxes):      # image: validated (H, W, 3) uint8 ndarray or tensor
            ...                              # boxes: (K, 4) float64 ndarray, validated [x, y, w, h]

        def _advance(self, image):           # same frame size as at start (checked)
            return boxes, scores             # (K, 4) and (K,) array-likes

Images: RGB HWC uint8 numpy arrays, torch tensors (any device) or PIL images (converted once on
entry; the got10k toolkit passes PIL). Every tracker is plain PyTorch until
`fasttrack.patch(tracker)`; `fasttrack.unpatch` and `fasttrack.is_patched` work on it too.

Public API (got10k style): `init(image, box)`, `update(image) -> box` ((4,) float32 ndarray,
[x, y, w, h] in pixels, 0-based, never truncated), the last confidence in `tracker.score`;
`init_batch(image, boxes)` / `update_batch(image)` for many targets in one forward ((K, 4)
boxes, `tracker.scores` (K,)); `track(frames, box)` runs a whole sequence; pytracking adapter
`initialize(image, info)` / `track(image[, info])` returning dicts. `track` is overloaded:
called with a box it runs a sequence, called with one image (and optionally pytracking's info
dict) it is pytracking's step.

Precision: `set_precision("bf16")` (or "fp16") runs init and every frame under
`torch.autocast` in that dtype, "tf32" lets float32 matmuls and convolutions use TF32 on CUDA
(a no-op on the CPU), "fp32" (the default) runs the model as built. The flags are set for the
duration of the call and restored after it: nothing global changes.

Errors: a wrong image (type, rank, channel count, dtype, empty, or a size other than the
init frame's) is a TypeError/ValueError naming `image`; a box that is not 4 finite numbers with
w, h > 0 overlapping the frame is a ValueError naming `box` (`boxes[i]` for batches); update
before init is `NotInitializedError` (a ValueError and a RuntimeError) naming `init`.
"""
from __future__ import annotations

import abc
import contextlib
import time
from typing import Any

import numpy as np
import torch

__all__ = ["Tracker", "NotInitializedError", "as_image", "check_image", "check_boxes", "MAX_BOX_TO_FRAME",
           "PRECISIONS", "precision_context"]

# What `Tracker.set_precision` accepts: the autocast dtype of each ("tf32": float32 with TF32
# matmuls and convolutions on CUDA).
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@contextlib.contextmanager
def precision_context(precision: str, device) -> Any:
    """Run a block at `precision` (PRECISIONS) on `device`: autocast for "bf16" / "fp16",
    TF32 matmuls and convolutions for "tf32" on CUDA; the previous flags are restored after."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    kind = torch.device(device).type
    if PRECISIONS[precision] is not None:
        with torch.autocast(kind, dtype=PRECISIONS[precision]):
            yield
    elif precision == "tf32" and kind == "cuda":
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    else:
        yield


# The largest box width / height accepted, in multiples of the frame's width / height.
MAX_BOX_TO_FRAME = 4


class NotInitializedError(ValueError, RuntimeError):
    """`update` / `update_batch` / `track(image)` before `init` / `init_batch`."""


def _from_pil(image: Any) -> Any:
    """A PIL image as an RGB (H, W, 3) uint8 array (grayscale and RGBA converted: the got10k
    toolkit passes PIL images); anything else unchanged. PIL is not imported for this."""
    if type(image).__module__.startswith("PIL.") and hasattr(image, "convert"):
        return np.array(image.convert("RGB"))  # a writable copy (torch.from_numpy warns on views)
    return image


def as_image(image: Any, name: str = "image") -> tuple[Any, tuple[int, int]]:
    """Validate an RGB HWC uint8 image (numpy array, torch tensor on any device, or PIL image,
    converted once to an array) and return (image, (H, W)). TypeError for a wrong type or
    dtype, ValueError for a wrong shape."""
    image = _from_pil(image)
    if isinstance(image, np.ndarray):
        dtype_ok = image.dtype == np.uint8
    elif isinstance(image, torch.Tensor):
        dtype_ok = image.dtype == torch.uint8
    else:
        raise TypeError(f"{name} must be an RGB (H, W, 3) uint8 numpy array, torch tensor or PIL "
                        f"image, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3) (RGB, channels last), got "
                         f"{tuple(image.shape)}")
    if not dtype_ok:
        raise TypeError(f"{name} must have dtype uint8, got {image.dtype}")
    h, w = int(image.shape[0]), int(image.shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"{name} must not be empty, got shape {tuple(image.shape)}")
    return image, (h, w)


def check_image(image: Any, name: str = "image") -> tuple[int, int]:
    """(H, W) of a valid image (see `as_image`), or TypeError / ValueError naming `name`."""
    return as_image(image, name)[1]


def check_boxes(boxes: Any, frame_size: tuple[int, int], name: str = "box",
                batch: bool = False) -> np.ndarray:
    """Validate [x, y, w, h] boxes against a frame of size (H, W): finite, w, h > 0,
    overlapping the frame (a positive-area intersection) and at most MAX_BOX_TO_FRAME times its
    width and height. Returns (4,) float64, or (K, 4) with
    K >= 1 when batch=True. ValueError/TypeError naming `name` (and the row for batches)."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be numbers [x, y, w, h], got {type(boxes).__name__}") from None
    want = "(K, 4) with K >= 1" if batch else "(4,) [x, y, w, h]"
    if (batch and (arr.ndim != 2 or arr.shape[1] != 4 or arr.shape[0] < 1)) or (
            not batch and arr.shape != (4,)):
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    H, W = frame_size
    for i, row in enumerate(arr.reshape(-1, 4)):
        x, y, w, h = (float(v) for v in row)  # plain floats: messages read [0.0, ...], not np.float64
        label = f"{name}[{i}]" if batch else name
        if not np.all(np.isfinite([x, y, w, h])):
            raise ValueError(f"{label} must be finite, got {[x, y, w, h]}")
        if w <= 0 or h <= 0:
            raise ValueError(f"{label} is empty: width and height must be > 0, got w={w}, h={h}")
        if x >= W or y >= H or x + w <= 0 or y + h <= 0:
            raise ValueError(f"{label} = {[x, y, w, h]} lies outside the {W}x{H} frame")
        # A box may stick out of the frame (a target entering it) but not dwarf it: a 1e9-wide
        # box is a unit or typing mistake, and would make every crop of it a blur.
        if w > MAX_BOX_TO_FRAME * W or h > MAX_BOX_TO_FRAME * H:
            raise ValueError(f"{label} = {[x, y, w, h]} is more than {MAX_BOX_TO_FRAME}x the "
                             f"{W}x{H} frame (width x height)")
    return arr


class Tracker(abc.ABC):
    """Base class of fasttrack trackers; see the module docstring for the contract.

    Attributes:
        score: confidence of the last `update` (float), None before the first one.
        scores: (K,) float32 confidences of the last step, one per target.
        frame_size: (H, W) of the init frame, None before init.
    """

    max_targets: int | None = None
    precision: str = "fp32"

    def __init__(self) -> None:
        self.score: float | None = None
        self.scores: np.ndarray | None = None
        self.frame_size: tuple[int, int] | None = None
        self._num_targets = 0

    # -- hooks ------------------------------------------------------------------------------
    @abc.abstractmethod
    def _start(self, image, boxes: np.ndarray) -> None:
        """Start tracking the K targets `boxes` (K, 4) in the validated frame `image`."""

    @abc.abstractmethod
    def _advance(self, image) -> tuple[Any, Any]:
        """One step on the validated frame: returns boxes (K, 4) and scores (K,)."""

    def set_precision(self, precision: str) -> "Tracker":
        """Run init and frames at `precision`: "fp32" (default), "tf32" (CUDA matmuls and
        convolutions in TF32), "bf16" or "fp16" (autocast). Returns self. ValueError naming
        `precision` for anything else. Changing it re-captures a tracker's CUDA graph."""
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        return self

    def _precision(self):
        """The context of this tracker's precision on its device."""
        return precision_context(self.precision, getattr(self, "device", "cpu"))

    # -- checks -----------------------------------------------------------------------------
    def _check_frame(self, image):
        """The validated frame (PIL converted) of an update: the init frame's size."""
        image, size = as_image(image)
        if self.frame_size is None:
            raise NotInitializedError(f"{type(self).__name__}: call init(image, box) (or "
                                      "init_batch) before update")
        if size != self.frame_size:
            raise ValueError(f"image must have the init frame's size {self.frame_size} (H, W), "
                             f"got {size}")
        return image

    # -- got10k-style API -------------------------------------------------------------------
    def init(self, image, box) -> None:
        """Start tracking one target. image: (H, W, 3) uint8 RGB (array, tensor or PIL image);
        box: [x, y, w, h]."""
        image, size = as_image(image)
        arr = check_boxes(box, size, "box")
        self._begin(image, size, arr[None])

    def init_batch(self, image, boxes) -> None:
        """Start tracking K targets in one frame. boxes: (K, 4) [x, y, w, h] rows."""
        image, size = as_image(image)
        arr = check_boxes(boxes, size, "boxes", batch=True)
        if self.max_targets is not None and arr.shape[0] > self.max_targets:
            raise ValueError(f"boxes holds {arr.shape[0]} targets; {type(self).__name__} tracks "
                             f"at most {self.max_targets} per forward")
        self._begin(image, size, arr)

    def _begin(self, image, size, boxes: np.ndarray) -> None:
        self.frame_size = None
        with self._precision():
            self._start(image, boxes)
        self.frame_size = size
        self._num_targets = boxes.shape[0]
        self.scores = np.ones(boxes.shape[0], dtype=np.float32)
        self.score = 1.0

    def update(self, image) -> np.ndarray:
        """Track one frame; returns the (4,) float32 box [x, y, w, h] of target 0."""
        return self.update_batch(image)[0]

    def update_batch(self, image) -> np.ndarray:
        """Track one frame for all targets; returns (K, 4) float32 boxes."""
        image = self._check_frame(image)
        with self._precision():
            boxes, scores = self._advance(image)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(self._num_targets, 4)
        self.scores = np.asarray(scores, dtype=np.float32).reshape(self._num_targets)
        self.score = float(self.scores[0])
        return boxes

    def run(self, frames, box, *, limit: int | None = None, on_frame=None, progress: bool = True,
            desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Track a sequence and time every call: the one timed tracking loop (`track`, the
        command line and the evaluation all use it).

        Args:
            frames: an iterable of images (a list, a fasttrack Sequence, a generator).
            box: the first frame's [x, y, w, h].
            limit: track only the first `limit` frames. on_frame: optional callable
                (index, frame, box) after each frame. progress: a tqdm bar on stderr when it is a
                terminal. desc: the bar's label (default: the sequence name or the class name).
        Returns:
            boxes (N, 4) float32 (row 0 = box) and times (N,) float64: seconds of each `init` /
            `update` call (reading frames and `on_frame` are not timed).
        """
        from itertools import islice

        from tqdm.auto import tqdm

        n = len(frames) if hasattr(frames, "__len__") else None
        if limit is not None:
            n = limit if n is None else min(n, int(limit))
        name = desc or getattr(frames, "name", None) or type(self).__name__
        boxes, times = [], []
        it = iter(frames) if limit is None else islice(frames, int(limit))
        # disable=None: no bar when stderr is not a terminal (logs, pipes)
        with tqdm(it, total=n, disable=None if progress else True, unit="frame", leave=False,
                  desc=name) as bar:
            for i, frame in enumerate(bar):
                t0 = time.perf_counter()
                if i == 0:
                    self.init(frame, box)
                    out = check_boxes(box, self.frame_size).astype(np.float32)
                else:
                    out = self.update(frame)
                times.append(time.perf_counter() - t0)
                boxes.append(out)
                if on_frame is not None:
                    on_frame(i, frame, out)
        if not boxes:
            raise ValueError(f"{name}: frames must hold at least one image")
        return np.stack(boxes).astype(np.float32), np.asarray(times, np.float64)

    def track(self, frames, box=None, *, progress: bool = True):
        """Two uses. `track(frames, box)`: run a sequence (frames: iterable of images; box: the
        first frame's [x, y, w, h]) and return (boxes (N, 4) float32 with row 0 = box,
        seconds_per_frame: the mean time of the init and update calls), with a tqdm bar
        unless progress=False (see `run`). `track(image)` or `track(image, info_dict)`:
        pytracking's step, returns {"target_bbox": [x, y, w, h], "score": float}."""
        if box is None or isinstance(box, dict):
            out = self.update(frames)
            return {"target_bbox": [float(v) for v in out], "score": self.score}
        boxes, times = self.run(frames, box, progress=progress)
        return boxes, float(times.mean())

    # -- pytracking adapter -----------------------------------------------------------------
    def initialize(self, image, info: dict) -> dict:
        """pytracking: info["init_bbox"] is [x, y, w, h]. Returns {"time": seconds}."""
        if not isinstance(info, dict) or "init_bbox" not in info:
            raise ValueError("info must be a dict with key 'init_bbox' = [x, y, w, h]")
        start = time.perf_counter()
        self.init(image, info["init_bbox"])
        return {"time": time.perf_counter() - start}
