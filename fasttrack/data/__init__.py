"""Tracking data: sequences, data set readers (GOT-10k, LaSOT, TNL2K, OTB, image folders, videos)
and synthetic sequences with exact ground truth. Sequences carry the data set's language
description of the target where it has one (``Sequence.text``; synthetic ones are described by
:mod:`fasttrack.data.text`).

Video decoding needs PyAV (``pip install fasttrack[video]``); it is imported only when a video is
opened.
"""

from .sequences import (
    IMAGE_EXTS,
    OTB_FRAME_RANGES,
    VIDEO_EXTS,
    Sequence,
    list_images,
    load_folder,
    load_got10k,
    load_lasot,
    load_otb,
    load_tnl2k,
    open_sequences,
    read_boxes,
    read_image,
)
from .synthetic import synthetic_sequence
from .video import VideoFrames, load_video

__all__ = [
    "Sequence", "IMAGE_EXTS", "VIDEO_EXTS", "OTB_FRAME_RANGES", "read_image", "read_boxes",
    "list_images", "load_folder", "load_got10k", "load_lasot", "load_otb", "load_tnl2k",
    "open_sequences", "synthetic_sequence", "VideoFrames", "load_video",
]
