"""The unpatched map path: Prompt-to-Prompt-style recording with materialized attention maps.

fasttrack's trackers run "unpatched" with the model's own diffusers processors on every layer
they do not record; on the recorded layers this recorder swaps in `EagerMapProcessor`, the
classic diffusers AttnProcessor math (explicit softmax(scale q k^T), bmm with v), which keeps
the head-mean probabilities. This is what map-reading diffusion code does without fasttrack
(Prompt-to-Prompt's AttentionStore, SLiMe, DiffSeg): it is the baseline of the benchmarks and
the independent reference of the patched path in the tests.

Everything is materialized (N x N self maps): cross maps (B, N, T) are resized bilinearly to the
output grid and summed; self maps S (B, N, N) are resized DiffSeg-style into S_up (B, M, M)
(queries nearest-repeated, each row bilinearly upsampled over keys, optionally renormalized) and
summed; results are mean(S_up)^T mean(C), exactly the product `fasttrack.AttentionRecorder`
computes without forming either matrix (DESIGN 1.2). Same constructor and results API as
AttentionRecorder: cross(), self_cross(), harmonized(alpha) -> (B', T', Rh, Rw), reset(),
num_calls. Gradients flow (prompt learning) through the materialized maps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..integrations.diffusers_attention import finish_output, flatten_input
from .base import Recorder
from .fused import _take

__all__ = ["EagerRecorder", "EagerMapProcessor"]


class EagerMapProcessor:
    """diffusers' classic AttnProcessor (materialized probabilities) that reports its
    head-mean map (B, N, Nk) to `sink(map, hw_hint)`. hidden_states (B, N, C) or (B, C, h, w)."""

    def __init__(self, sink):
        self.sink = sink

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        hidden_states, residual, spatial = flatten_input(attn, hidden_states, temb)
        hw = None if spatial is None else tuple(spatial[2:])
        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                          else encoder_hidden_states.shape)
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        query = attn.head_to_batch_dim(query)
        probs = attn.get_attention_scores(query, key, attention_mask)     # (B*H, N, Nk)
        self.sink(probs.view(batch_size, attn.heads, *probs.shape[1:]).mean(1), hw)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        return finish_output(attn, hidden_states, residual, spatial)


def _nearest_rows(hw, grid, device) -> torch.Tensor:
    """(M,) index of the source pixel that nearest upsampling copies to each output pixel."""
    idx = torch.arange(hw[0] * hw[1], dtype=torch.float32, device=device).view(1, 1, *hw)
    return F.interpolate(idx, size=grid, mode="nearest").round().long().view(-1)


def resize_self_map(s: torch.Tensor, hw, grid, renormalize: bool) -> torch.Tensor:
    """Materialized DiffSeg resize of a self map. s (B, N, N) -> S_up (B, M, M)."""
    b, n, _ = s.shape
    if tuple(hw) != tuple(grid):
        keys = F.interpolate(s.reshape(b * n, 1, *hw), size=grid, mode="bilinear",
                             align_corners=False).reshape(b, n, -1)
        s = keys[:, _nearest_rows(hw, grid, s.device)]
    if renormalize:
        s = s / s.sum(-1, keepdim=True)
    return s


class EagerRecorder(Recorder):
    """Materializing attention recorder for unpatched models (same arguments and results as
    AttentionRecorder: see `fasttrack.recorder.base.Recorder`)."""

    def _init_state(self) -> None:
        self._saved = []

    def reset(self) -> None:
        self._cross_sum = self._self_sum = None
        self._cross_count = self._self_count = 0
        self._calls: dict[str, int] = {}

    def __enter__(self) -> "EagerRecorder":
        # Only the layers that may be recorded materialize their maps; the others keep the
        # model's own (fused) processors.
        active = [l for l in self._layers if self._sel[l.kind].may_match(l.name)]
        for layer in active:
            self._saved.append((layer.module, layer.module.processor))
            layer.module.set_processor(EagerMapProcessor(self._sink(layer)))
        self._spatial.install(active)
        return self

    def __exit__(self, *exc) -> None:
        for module, proc in self._saved:
            module.set_processor(proc)
        self._saved.clear()
        self._spatial.remove()

    def _sink(self, layer):
        def sink(probs: torch.Tensor, hint) -> None:
            hw = self._spatial.hw(layer, probs.shape[1], hint)
            if not self._sel[layer.kind].matches(layer.name, hw):
                return
            if hw[0] > self.grid[0] or hw[1] > self.grid[1]:
                raise ValueError(f"resolution {self.grid} is smaller than recorded layer {layer.name} {hw}")
            self._calls[layer.name] = self._calls.get(layer.name, 0) + 1
            p = probs.float() if probs.dtype != torch.float64 else probs
            if self.batch is not None:
                p = _take(p, 0, self.batch, p.shape[0], "batch", "batch entries")
            if layer.kind == "cross":
                m = p.transpose(1, 2).reshape(p.shape[0], p.shape[2], *hw)
                if tuple(hw) != self.grid:
                    m = F.interpolate(m, size=self.grid, mode="bilinear", align_corners=False)
                self._cross_sum = m if self._cross_sum is None else self._cross_sum + m
                self._cross_count += 1
            else:
                s = resize_self_map(p, hw, self.grid, self.renormalize)
                self._self_sum = s if self._self_sum is None else self._self_sum + s
                self._self_count += 1
        return sink

    def cross(self) -> torch.Tensor:
        """(B', T', Rh, Rw) averaged cross maps (all tokens, or `tokens`)."""
        if self._cross_count == 0:
            raise ValueError("nothing recorded yet: run the model inside `with recorder:` first")
        c = self._cross_sum / self._cross_count
        # _take: a view or a cached index tensor, not an index built from a host list per call
        return c if self.tokens is None else _take(c, 1, self.tokens, c.shape[1], "tokens", "tokens")

    def _self_apply(self, c: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """mean(S_up)^T c with the materialized maps: c (B' / groups, T', Rh, Rw) -> the same
        shape; the mean also runs over the batch groups."""
        if self._self_count == 0:
            raise ValueError("no self-attention layer has been recorded yet")
        b, t = c.shape[:2]
        s = self._group_mean(self._self_sum / self._self_count, groups)       # (B' / groups, M, M)
        y = torch.bmm(s.transpose(1, 2), c.reshape(b, t, -1).transpose(1, 2))  # (B', M, T')
        return y.transpose(1, 2).reshape(b, t, *self.grid)
