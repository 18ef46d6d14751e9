"""Diff-Tracker (seed 000) on fasttrack: `DiffTracker`, plus the pieces DINTR shares
(sd: loading Stable Diffusion components; boxes: maps to boxes; maps: patched / unpatched map
reading; prompt_learning; serialization)."""
from .tracker import DiffTracker

__all__ = ["DiffTracker"]
