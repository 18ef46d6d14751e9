"""DeTrack's visual memory: K template slots per target and the score gate that refreshes them.

Slot 0 holds the first frame's template for the whole sequence. Slots 1 .. K-1 are dynamic:
at init they all hold the first template; after a frame whose prediction passes the gate
(IoU score > iou_gate and softmax score > softmax_gate, DESIGN.md 1.4: 0.75 and 0.9) the template
cropped at the new box replaces the oldest dynamic slot (round robin), so the memory keeps the
most recent confident appearances next to the reliable first one.

Everything is a tensor operation on fixed tensors updated in place (`torch.where` + `copy_`),
with no host round trip and no data-dependent Python branch, so one step for many targets, each
with its own gate decision, can be captured in a CUDA graph.
"""
from __future__ import annotations

import torch

__all__ = ["VisualMemory", "score_gate"]


def score_gate(iou_score: torch.Tensor, softmax_score: torch.Tensor, iou_gate: float,
               softmax_gate: float) -> torch.Tensor:
    """(B,) bool: True where both scores pass their thresholds (strictly greater)."""
    return (iou_score > iou_gate) & (softmax_score > softmax_gate)


class VisualMemory:
    """Template tokens of B targets, (B, K, Nz, C), plus the next dynamic slot of each target.

    Args:
        first: (B, Nz, C) tokens of the first templates.
        slots: K >= 1 (DeTrack: 3).
    """

    def __init__(self, first: torch.Tensor, slots: int = 3):
        if first.dim() != 3:
            raise ValueError(f"first must be (B, Nz, C), got {tuple(first.shape)}")
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        self.tokens = first[:, None].repeat(1, slots, 1, 1).contiguous()
        # next dynamic slot to overwrite, per target; with one slot there is nothing dynamic
        self.next_slot = torch.full((first.shape[0],), min(1, slots - 1), dtype=torch.long,
                                    device=first.device)
        self._slot_ids = torch.arange(slots, device=first.device)

    def update(self, new: torch.Tensor, gate: torch.Tensor) -> None:
        """Write `new` (B, Nz, C) into the next dynamic slot of the targets where gate (B,) is
        True; advance their slot pointer (1 -> 2 -> .. -> K-1 -> 1). In place."""
        if self.slots == 1:
            return
        hit = gate[:, None] & (self._slot_ids[None, :] == self.next_slot[:, None])   # (B, K)
        self.tokens.copy_(torch.where(hit[:, :, None, None], new[:, None].to(self.tokens.dtype),
                                      self.tokens))
        advanced = torch.where(self.next_slot + 1 >= self.slots, torch.ones_like(self.next_slot),
                               self.next_slot + 1)
        self.next_slot.copy_(torch.where(gate, advanced, self.next_slot))

    def tensors(self) -> list[torch.Tensor]:
        """The state tensors (for CUDA-graph snapshots)."""
        return [self.tokens, self.next_slot]
