"""Triton kernels of fasttrack (importable as fasttrack.kernels; needs triton).

Launchers (torch tensors in, torch tensors out; shapes in each docstring):
attention_fwd, lse_fwd, attention_bwd (kernels/attention.py), self_cross_fwd, self_cross_lse_fwd,
self_cross_bwd (kernels/self_cross.py), cross_attention_fwd, cross_attention_bwd (kernels/cross_attention.py);
stub_launches() turns every launch into a no-op (host-cost measurements).
"""
from ._interpret_guard import INTERPRETED  # noqa: F401  (warns: TRITON_INTERPRET=1 on a GPU machine)
from .attention import attention_bwd, attention_fwd, lse_fwd
from .cross_attention import cross_attention_bwd, cross_attention_fwd
from .self_cross import self_cross_bwd, self_cross_fwd, self_cross_lse_fwd
from ._common import stub_launches

__all__ = [
    "attention_fwd",
    "attention_bwd",
    "lse_fwd",
    "self_cross_fwd",
    "self_cross_bwd",
    "self_cross_lse_fwd",
    "cross_attention_fwd",
    "cross_attention_bwd",
    "stub_launches",
]
