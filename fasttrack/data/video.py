"""Video files as tracking sequences, decoded lazily with PyAV (``pip install av``).

Frames are decoded on demand: reading frames in increasing order decodes each frame once (the
tracking access pattern); going back reopens the file and decodes from the start.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .sequences import Sequence, path_problem, read_boxes

__all__ = ["VideoFrames", "load_video", "require_av"]


def require_av(purpose: str = "reading videos"):
    """The PyAV module; ImportError saying how to install it (`purpose` starts the message,
    e.g. "writing mp4") when it cannot be imported."""
    try:
        import av
    except ImportError as exc:
        raise ImportError(f"{purpose} needs PyAV: pip install av (or pip install "
                          "fasttrack[video])") from exc
    return av


class VideoFrames:
    """Lazy, indexable frames of a video file: ``frames[i]`` is (H, W, 3) uint8 RGB.

    The length comes from the container's frame count when it has one, otherwise from counting
    the video packets (no decoding). Only the first video stream is read.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._container = None
        self._decoder = None
        self._next = 0  # index of the frame the open decoder yields next
        self._last: np.ndarray | None = None
        container = self._open()
        try:
            stream = container.streams.video[0]
            n = int(stream.frames or 0)
            if n <= 0:
                n = sum(1 for pkt in container.demux(stream) if pkt.size > 0)
        finally:
            container.close()
        self._len = n

    def _open(self):
        av = require_av()
        problem = path_problem(self.path, "file")
        if problem:
            raise ValueError(f"cannot read video {self.path}: {problem}")
        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise ValueError(f"cannot read video {self.path}: {exc}") from None
        if not container.streams.video:
            container.close()
            raise ValueError(f"cannot read video {self.path}: no video stream")
        return container

    def _restart(self):
        self.close()
        self._container = self._open()
        self._decoder = self._container.decode(video=0)
        self._next = 0
        self._last = None

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < self._len:
            raise IndexError(f"frame {i} out of range for video {self.path} of {self._len} frames")
        if self._last is not None and i == self._next - 1:
            return self._last
        if self._decoder is None or i < self._next:
            self._restart()
        av = require_av()
        try:
            while self._next <= i:
                frame = next(self._decoder)
                self._next += 1
                if self._next > i:
                    self._last = frame.to_ndarray(format="rgb24")
        except StopIteration:
            raise ValueError(f"video {self.path} ended after {self._next} frames; its header "
                             f"announced {self._len}") from None
        except av.FFmpegError as exc:
            raise ValueError(f"cannot decode frame {self._next} of video {self.path}: {exc}") from None
        return self._last

    def close(self):
        """Close the open decoder, if any (reopened on the next access)."""
        if self._container is not None:
            self._container.close()
        self._container = None
        self._decoder = None

    def __del__(self):
        self.close()


def load_video(path, gt=None, name: str | None = None) -> Sequence:
    """A video file as one sequence.

    Args:
        path: video file (any container / codec FFmpeg reads).
        gt: optional ground-truth text file (one [x, y, w, h] per line, see ``read_boxes``) or an
            (N, 4) array; its length must equal the frame count.
        name: sequence name (default: the file stem).
    """
    frames = VideoFrames(path)
    boxes = None
    if gt is not None:
        if isinstance(gt, (str, Path)):
            boxes = read_boxes(gt)
            if len(boxes) != len(frames):
                raise ValueError(f"ground truth {gt} has {len(boxes)} boxes but video {path} "
                                 f"has {len(frames)} frames")
        else:
            boxes = gt
    return Sequence(name or Path(path).stem, frames, boxes,
                    meta={"path": str(path), "layout": "video"})
