"""Annotated output of `fasttrack track`: boxes drawn with Pillow, written as PNG frames or as
an mp4 encoded with PyAV (H.264 when FFmpeg has libx264, else MPEG-4 part 2).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["draw_box", "PngWriter", "Mp4Writer", "video_rate"]

BOX_COLOR = (255, 40, 40)


def draw_box(frame: np.ndarray, box, color=BOX_COLOR, width: int = 2,
             label: str | None = None) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 frame with the [x, y, w, h] box outlined (the outline
    lies inside the box) and an optional label above it."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(img)
    x, y, w, h = (float(v) for v in box)
    if np.isfinite([x, y, w, h]).all() and w > 0 and h > 0:
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=color, width=width)
        if label:
            draw.text((x + 2, max(0.0, y - 12)), label, fill=color)
    return np.asarray(img)


class PngWriter:
    """Writes frame i as `folder`/00000001.png (1-based, 8 digits, like GOT-10k frames)."""

    def __init__(self, folder):
        self.path = Path(folder)
        self.path.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image

        self.count += 1
        Image.fromarray(frame).save(self.path / f"{self.count:08d}.png")

    def close(self) -> None:
        """Nothing to flush (each frame is written at once)."""


def _codec(av) -> str:
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # PyAV raises its own UnknownCodecError (or ValueError, by version)
            continue
    raise ValueError("cannot write mp4: FFmpeg in PyAV has neither libx264 nor mpeg4 encoders")


def video_rate(path, default: float = 30.0) -> Fraction:
    """Average frame rate of a video file's first video stream (default when unknown)."""
    from ..data.video import require_av

    av = require_av()
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
    except (av.FFmpegError, OSError, IndexError):
        rate = None
    if not rate or float(rate) <= 0:
        return Fraction(default).limit_denominator(1001)
    return Fraction(rate).limit_denominator(1001)


class Mp4Writer:
    """Encodes RGB frames into an mp4 at `rate` frames per second (yuv420p: odd frame sizes
    are padded by one pixel, replicating the edge)."""

    def __init__(self, path, rate=30):
        from ..data.video import require_av

        self._av = av = require_av("writing mp4")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rate = Fraction(rate).limit_denominator(1001)
        self._container = av.open(str(self.path), mode="w")
        self._stream = None
        self.count = 0

    def write(self, frame: np.ndarray) -> None:
        av = self._av
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._stream is None:
            self._stream = self._container.add_stream(_codec(av), rate=self.rate)
            self._stream.height, self._stream.width = frame.shape[:2]
            self._stream.pix_fmt = "yuv420p"
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.count += 1

    def close(self) -> None:
        """Flush the encoder and close the file."""
        if self._container is None:
            return
        if self._stream is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        self._container = None
