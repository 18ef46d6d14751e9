"""DINTR (Nguyen et al., NeurIPS 2024) on fasttrack: `DINTR`; the interpolation process (interpolation.py) and the
point / box / mask indications (indication.py)."""
from .tracker import DINTR

__all__ = ["DINTR"]
