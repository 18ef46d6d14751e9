"""A fused diffusers attention processor that can record maps, and the patch rule installing it.

`fasttrack.patch(model)` gives every diffusers `Attention` module whose processor is one of the
standard ones (AttnProcessor2_0, AttnProcessor, SlicedAttnProcessor, XFormersAttnProcessor) a
`FasttrackAttnProcessor`; `fasttrack.unpatch(model)` puts the exact original processor objects
back. Processors with extra math (IP-Adapter, custom diffusion, added KV projections, fused QKV)
are left untouched: replacing them would change the model's outputs.

The processor reproduces AttnProcessor2_0 step by step (spatial_norm, 4-D input reshape,
attention mask preparation, group_norm, norm_cross, q/k/v projections, norm_q/norm_k, output
projection and dropout, residual_connection, rescale_output_factor). Only the attention call
differs, and only on layers an `AttentionRecorder` asks for:

- not recorded: torch's scaled_dot_product_attention, exactly as AttnProcessor2_0. It already is
  a fused flash/memory-efficient kernel on CPU and GPU, and needs neither lse nor maps here;
- recorded self-attention: `fasttrack.ops.attention` -> (out, lse), and (q, k, lse) go to the
  recorder (N (2D + 1) numbers per head, DESIGN 1.2). When the dispatcher would pick the "torch"
  backend (CPU), SDPA computes the output instead and lse is left to the recorder, which gets it
  from its own normalization pass when results are asked for: the torch backend's attention
  would hold a (B, H, rows, N) probability slab that SDPA's fused CPU kernel avoids;
- recorded cross-attention: `fasttrack.ops.cross_attention` -> (out, head-mean probs (B, N, T)).
  With an attention mask (diffusers passes the prompt padding mask as an additive bias to cross
  layers) the probabilities are computed with the mask added to the logits, so masked keys get
  zero probability: this materializes (B, H, N, T) for that layer only (T is the short text axis,
  so this is the size of the layer's activations, never N x N). A recorded self-attention layer
  with a mask raises ValueError: the fused self_cross has no mask operand.
"""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from .. import ops
from ..ops.dispatch import select
from ..patch import PatchRule, register_rule

__all__ = ["FasttrackAttnProcessor", "RULE", "is_diffusers_attention", "flatten_input", "finish_output"]

# Processor classes whose math FasttrackAttnProcessor reproduces exactly, and how they scale the
# logits: AttnProcessor2_0 leaves the scale to SDPA (D ** -0.5, ignoring attn.scale) and applies
# norm_q/norm_k; the classic processors use attn.scale and no q/k norms.
_SUPPORTED = {"AttnProcessor2_0": "sdpa", "AttnProcessor": "classic",
              "SlicedAttnProcessor": "classic", "XFormersAttnProcessor": "classic"}

_INSTALL_HINT = "pip install fasttrack[diffusers]"


def is_diffusers_attention(module) -> bool:
    """True for diffusers' `Attention` class itself (not its subclasses), without importing
    diffusers."""
    t = type(module)
    return t.__name__ == "Attention" and t.__module__.startswith("diffusers.")


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """An SDPA attn_mask as an additive bias: boolean masks keep True entries."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    return mask.to(dtype)


def flatten_input(attn, hidden_states, temb=None):
    """The start every diffusers attention processor shares: spatial_norm, then a 4-D input
    (B, C, h, w) flattened to (B, h w, C). Returns (hidden_states (B, N, C), residual (the
    input), spatial: the (B, C, h, w) size to restore, or None for 3-D input)."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    spatial = None
    if hidden_states.ndim == 4:
        spatial = hidden_states.shape
        b, c, h, w = spatial
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    return hidden_states, residual, spatial


def finish_output(attn, hidden_states, residual, spatial):
    """The end every diffusers attention processor shares: output projection and dropout, the
    4-D shape back, residual_connection and rescale_output_factor. hidden_states (B, N, C)."""
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
    if spatial is not None:
        hidden_states = hidden_states.transpose(-1, -2).reshape(spatial)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    # x / 1.0 is x bit for bit: skip the op (and its launch) in the usual case
    return hidden_states if attn.rescale_output_factor == 1.0 else hidden_states / attn.rescale_output_factor


class FasttrackAttnProcessor:
    """Fused attention for a diffusers `Attention` module, with optional map recording.

    Args:
        backend: "auto", "cuda", "triton" or "torch": the fasttrack backend of recorded layers.
        flavor: "sdpa" (reproduces AttnProcessor2_0) or "classic" (AttnProcessor's attn.scale
            and no q/k norms).
    `hook` is set by `fasttrack.AttentionRecorder` while it records; None otherwise.
    """

    def __init__(self, backend: str = "auto", flavor: str = "sdpa"):
        if flavor not in ("sdpa", "classic"):
            raise ValueError(f"flavor must be 'sdpa' or 'classic', got {flavor!r}")
        self.backend = backend
        self.flavor = flavor
        self.hook = None

    def __repr__(self) -> str:
        return f"FasttrackAttnProcessor(backend={self.backend!r}, flavor={self.flavor!r})"

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        """hidden_states (B, N, C) or (B, C, h, w); encoder_hidden_states (B, T, Dc) or None
        (self-attention); attention_mask broadcastable to (B, T) / (B, 1, T) or (B, N, T) as
        diffusers passes it. Returns the layer output with hidden_states' shape."""
        hidden_states, residual, spatial = flatten_input(attn, hidden_states, temb)
        hw = None if spatial is None else tuple(spatial[2:])

        is_self = encoder_hidden_states is None
        batch_size, sequence_length, _ = hidden_states.shape if is_self else encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        # The projections on 2-D rows: the same matmuls as on (B, N, C), without the two
        # reshapes a 3-D nn.Linear adds around each (bit-identical, 4-5 fewer ops per layer).
        rows = hidden_states.reshape(-1, hidden_states.shape[-1])
        query = attn.to_q(rows)
        if is_self:
            context = rows
        else:
            if attn.norm_cross:
                encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
            context = encoder_hidden_states.reshape(-1, encoder_hidden_states.shape[-1])
        key = attn.to_k(context)
        value = attn.to_v(context)

        head_dim = key.shape[-1] // attn.heads
        q = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        k = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        v = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if self.flavor == "sdpa":
            if attn.norm_q is not None:
                q = attn.norm_q(q)
            if attn.norm_k is not None:
                k = attn.norm_k(k)
        # None keeps SDPA's own D ** -0.5 (AttnProcessor2_0 never passes attn.scale).
        sdpa_scale = None if self.flavor == "sdpa" else float(attn.scale)

        call = None
        if self.hook is not None:
            call = self.hook.plan(is_self=is_self, n_queries=q.shape[2], hw=hw,
                                  batch_size=batch_size, masked=attention_mask is not None)
        if call is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=0.0,
                                                 is_causal=False, scale=sdpa_scale)
        else:
            scale = head_dim ** -0.5 if sdpa_scale is None else sdpa_scale
            out = self._recorded(call, q, k, v, attention_mask, scale, sdpa_scale)

        hidden_states = out.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(q.dtype)
        return finish_output(attn, hidden_states, residual, spatial)

    def _recorded(self, call, q, k, v, mask, scale, sdpa_scale):
        """Attention of a recorded layer; hands (q, k, lse) or the head-mean probs to `call`.
        q (B, H, N, D), k/v (B, H, Nk, D) -> out (B, H, N, D)."""
        if call.kind == "self":
            backend = select("attention", self.backend, q, k, v)
            if backend == "torch":
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False,
                                                     scale=sdpa_scale)
                lse = None
            else:
                out, lse = ops.attention(q, k, v, scale=scale, backend=backend)
            call.add_self(q, k, lse, scale, self.backend)
            return out
        if mask is None:
            out, probs = ops.cross_attention(q, k, v, scale=scale, backend=self.backend)
        else:
            out, probs = _masked_cross_attention(q, k, v, mask, scale)
        call.add_cross(probs)
        return out


def _masked_cross_attention(q, k, v, mask, scale):
    """Attention with an additive/boolean mask and its head-mean probabilities.

    q (B, H, N, D), k/v (B, H, T, D), mask (B, H, 1 or N, T) -> out (B, H, N, D) in q.dtype,
    probs (B, N, T) in the accumulation dtype. Half inputs are accumulated in float32, as the
    fused kernels do; a -10000 bias (diffusers' padding mask) underflows to exactly 0 there."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    z = torch.matmul(q.to(acc), k.to(acc).transpose(-1, -2)) * scale + _additive(mask, acc)
    p = torch.softmax(z, dim=-1)
    out = torch.matmul(p, v.to(acc)).to(q.dtype)
    return out, p.mean(dim=1)


def _require_diffusers() -> None:
    try:
        importlib.import_module("diffusers.models.attention_processor")
    except ImportError as e:
        raise ImportError(
            f"patching diffusers Attention modules needs diffusers ({e}); install it with "
            f"`{_INSTALL_HINT}`") from e


def _matches(module) -> bool:
    if not is_diffusers_attention(module):
        return False
    proc_t = type(getattr(module, "processor", None))
    if proc_t.__name__ not in _SUPPORTED or not proc_t.__module__.startswith("diffusers."):
        return False
    # Added key/value projections (UnCLIP-style) need AttnAddedKVProcessor's extra math.
    return getattr(module, "added_kv_proj_dim", None) is None


def _apply(parent, attr, module, backend):
    original = module.processor
    module.set_processor(FasttrackAttnProcessor(backend, _SUPPORTED[type(original).__name__]))
    return original


def _restore(parent, attr, original) -> None:
    parent._modules[attr].set_processor(original)


RULE = register_rule(PatchRule("diffusers.Attention", _matches, _apply, _restore, _require_diffusers))
