"""DINTR (seed 001) on fasttrack: `DINTR`; the interpolation process (interpolation.py) and the
point / box / mask indications (indication.py)."""
from .tracker import DINTR

__all__ = ["DINTR"]
