"""Attention maps out of a diffusers model (DESIGN 1.2).

- fused.py   `AttentionRecorder`: the maps at fused-attention cost, never an N x N tensor;
- eager.py   `EagerRecorder`: the materializing, Prompt-to-Prompt-style recorder with the same
             API: the unpatched trackers' path and the bench baseline;
- layers.py  which layers to record (selectors) and their spatial sizes;
- resize.py  the exact resizing of cross maps and of S^T C to the output grid.
"""
from .eager import EagerRecorder
from .fused import AttentionRecorder

__all__ = ["AttentionRecorder", "EagerRecorder"]
