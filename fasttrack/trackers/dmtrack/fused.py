"""Fused cross-attention for DMTrack and its `fasttrack.patch` registration (importing this
module registers the swap).

`FusedGatedCrossAttention` is a `GatedCrossAttention` twin sharing the original's submodules and
gate (same parameters, state_dict keys, checkpoints) whose attention runs through
`fasttrack.ops.attention` (backend "auto" or the one given to `fasttrack.patch`): the search
tokens' queries over the L text keys, one fused launch on GPU backends, the memory-lean torch
backend on CPU. Same function as the reference's F.scaled_dot_product_attention, so a patched
tracker returns the same boxes (tests/test_dmtrack.py). Gradients flow through fasttrack.ops,
so a patched tracker also trains.
"""
from __future__ import annotations

import torch

from ...ops import attention
from ...ops.dispatch import check_backend
from ...patch import register_swap
from .model import GatedCrossAttention

__all__ = ["FusedGatedCrossAttention"]


class FusedGatedCrossAttention(GatedCrossAttention):
    """GatedCrossAttention whose attention is fasttrack.ops.attention. Build with
    `from_reference(ref, backend)`; shares ref's parameters."""

    backend: str

    @classmethod
    def from_reference(cls, ref: GatedCrossAttention, backend: str = "auto") -> "FusedGatedCrossAttention":
        if not isinstance(ref, GatedCrossAttention):
            raise TypeError(f"ref must be a GatedCrossAttention, got {type(ref).__name__}")
        check_backend(backend)
        fused = cls.__new__(cls)
        torch.nn.Module.__init__(fused)
        for name, child in ref.named_children():
            setattr(fused, name, child)
        fused.gate = ref.gate
        fused.dim, fused.heads, fused.gated, fused.backend = ref.dim, ref.heads, ref.gated, backend
        fused.train(ref.training)
        return fused

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, backend={self.backend!r}"

    def attend(self, q, k, v) -> torch.Tensor:
        out, _ = attention(q, k, v, backend=self.backend)
        return out


register_swap(GatedCrossAttention, FusedGatedCrossAttention.from_reference, name="DMTrack cross-attention")
