"""Diff-Tracker (Zhang et al., ECCV 2024) on fasttrack: `DiffTracker` (tracker.py), its online
prompt updater (updater.py, resnet.py). What it shares with DINTR is in ../diffusion/."""
from .tracker import DiffTracker

__all__ = ["DiffTracker"]
