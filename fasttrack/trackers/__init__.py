"""fasttrack's reference trackers, loaded on first use (`import fasttrack.trackers` stays light).

    from fasttrack.trackers import DeTrack       # fasttrack.trackers.detrack
    from fasttrack.trackers import DiffTracker   # fasttrack.trackers.diff_tracker
    from fasttrack.trackers import DINTR         # fasttrack.trackers.dintr
    from fasttrack.trackers import DMTrack       # fasttrack.trackers.dmtrack

All of them subclass `Tracker` (fasttrack.trackers.base): got10k-style `init` / `update`,
batched `init_batch` / `update_batch`, `track(frames, box)` and a pytracking adapter.
"""
from __future__ import annotations

import importlib

from .base import NotInitializedError, Tracker

# public name -> module defining it
_LAZY = {
    "DeTrack": "fasttrack.trackers.detrack",
    "DiffTracker": "fasttrack.trackers.diff_tracker",
    "DINTR": "fasttrack.trackers.dintr",
    "DMTrack": "fasttrack.trackers.dmtrack",
}

__all__ = ["Tracker", "NotInitializedError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fasttrack.trackers' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
