"""torch.library registration of fasttrack's ops: custom ops with fake kernels and autograd.

Each public op is one `fasttrack::<op>` custom op taking the requested backend ("auto" or a
name) as a string, so that torch.compile(fullgraph=True) sees a single opaque node (shapes from
the fake kernel). The backend is chosen inside the op, on the real tensors at run time
(`dispatch.select`), never while tracing; autograd calls the matching `fasttrack::<op>_bwd` op,
which selects again for the backward (the same inputs give the same choice). The forward ops
return the row log-sum-exp as an extra output: the backward recomputes probabilities from it.

Schemas (q (B,H,Nq,D), k (B,H,Nk,D), v (B,H,Nk,Dv), cross (B,Nq,T), lse (B,H,Nq)):
    fasttrack::attention(q, k, v, scale, backend) -> (out, lse)
    fasttrack::self_cross(q, k, cross, lse?, scale, backend) -> (out (B,Nk,T), lse_used)
    fasttrack::cross_attention(q, k, v, scale, backend) -> (out, probs (B,Nq,Nk), lse)
`lse_used` is the computed lse when the caller passed none, else an empty tensor (an output may
not alias an input); the caller's lse is then read from the inputs.

In eager mode (`mode()`) fasttrack.ops skips the custom ops and calls the `*_eager` functions at
the bottom: the same backend functions, wrapped in an autograd.Function only when a gradient is
needed (the custom op's dispatcher path alone costs several SDPA calls of host time).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .dispatch import backend_module, select


def _lse_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------- attention
def _attention_fwd(q, k, v, scale, backend):
    return backend_module(select("attention", backend, q, k, v)).attention_fwd(q, k, v, scale)


def _attention_bwd(q, k, v, out, lse, dout, dlse, scale, backend):
    mod = backend_module(select("attention_bwd", backend, q, k, v))
    return tuple(t.contiguous() for t in mod.attention_bwd(q, k, v, out, lse, dout, dlse, scale))


@torch.library.custom_op("fasttrack::attention", mutates_args=())
def attention_op(q: Tensor, k: Tensor, v: Tensor, scale: float, backend: str) -> tuple[Tensor, Tensor]:
    # contiguous like the fake kernel's outputs (the aten kernels return other layouts)
    return tuple(t.contiguous() for t in _attention_fwd(q, k, v, scale, backend))


@attention_op.register_fake
def _(q, k, v, scale, backend):
    return q.new_empty(*q.shape[:3], v.shape[3]), q.new_empty(q.shape[:3], dtype=_lse_dtype(q))


@torch.library.custom_op("fasttrack::attention_bwd", mutates_args=())
def attention_bwd_op(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dout: Optional[Tensor],
                     dlse: Optional[Tensor], scale: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _attention_bwd(q, k, v, out, lse, dout, dlse, scale, backend)


@attention_bwd_op.register_fake
def _(q, k, v, out, lse, dout, dlse, scale, backend):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _attention_setup(ctx, inputs, output):
    q, k, v, scale, backend = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale, ctx.backend = scale, backend


def _attention_backward(ctx, dout, dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = attention_bwd_op(q, k, v, out, lse, dout, dlse, ctx.scale, ctx.backend)
    return dq, dk, dv, None, None


attention_op.register_autograd(_attention_backward, setup_context=_attention_setup)


# ---------------------------------------------------------------- self_cross
def _self_cross_fwd(q, k, cross, lse, scale, backend):
    return _self_cross_with(backend_module(select("self_cross", backend, q, k, cross)), q, k, cross, lse, scale)


def _self_cross_with(mod, q, k, cross, lse, scale):
    if lse is None:
        if hasattr(mod, "self_cross_lse_fwd"):  # both passes in one backend call
            return mod.self_cross_lse_fwd(q, k, cross, scale)
        lse_used = mod.lse_fwd(q, k, scale)
        return mod.self_cross_fwd(q, k, cross, lse_used, scale), lse_used
    return mod.self_cross_fwd(q, k, cross, lse, scale), q.new_empty(0, dtype=_lse_dtype(q))


def _self_cross_bwd(q, k, cross, lse, dout, scale, lse_given, backend):
    mod = backend_module(select("self_cross_bwd", backend, q, k, cross))
    dq, dk, dcross, dlse = mod.self_cross_bwd(q, k, cross, lse, dout, scale, lse_given)
    if dlse is None:
        dlse = q.new_empty(0, dtype=lse.dtype)
    return dq.contiguous(), dk.contiguous(), dcross.contiguous(), dlse.contiguous()


@torch.library.custom_op("fasttrack::self_cross", mutates_args=())
def self_cross_op(q: Tensor, k: Tensor, cross: Tensor, lse: Optional[Tensor], scale: float,
                  backend: str) -> tuple[Tensor, Tensor]:
    return _self_cross_fwd(q, k, cross, lse, scale, backend)


@self_cross_op.register_fake
def _(q, k, cross, lse, scale, backend):
    out = cross.new_empty(k.shape[0], k.shape[2], cross.shape[2])
    if lse is None:
        return out, q.new_empty(q.shape[:3], dtype=_lse_dtype(q))
    return out, q.new_empty(0, dtype=_lse_dtype(q))


@torch.library.custom_op("fasttrack::self_cross_bwd", mutates_args=())
def self_cross_bwd_op(q: Tensor, k: Tensor, cross: Tensor, lse: Tensor, dout: Optional[Tensor], scale: float,
                      lse_given: bool, backend: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _self_cross_bwd(q, k, cross, lse, dout, scale, lse_given, backend)


@self_cross_bwd_op.register_fake
def _(q, k, cross, lse, dout, scale, lse_given, backend):
    dlse = torch.empty_like(lse) if lse_given else q.new_empty(0, dtype=lse.dtype)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(cross), dlse


def _self_cross_setup(ctx, inputs, output):
    q, k, cross, lse, scale, backend = inputs
    _, lse_used = output
    ctx.lse_given = lse is not None
    ctx.save_for_backward(q, k, cross, lse if ctx.lse_given else lse_used)
    ctx.scale, ctx.backend = scale, backend


def _self_cross_backward(ctx, dout, _dlse_used):
    q, k, cross, lse = ctx.saved_tensors
    dq, dk, dcross, dlse = self_cross_bwd_op(q, k, cross, lse, dout, ctx.scale, ctx.lse_given, ctx.backend)
    return dq, dk, dcross, (dlse if ctx.lse_given else None), None, None


self_cross_op.register_autograd(_self_cross_backward, setup_context=_self_cross_setup)


# ---------------------------------------------------------------- cross_attention
def _cross_attention_fwd(q, k, v, scale, backend):
    return backend_module(select("cross_attention", backend, q, k, v)).cross_attention_fwd(q, k, v, scale)


def _cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale, backend):
    mod = backend_module(select("cross_attention_bwd", backend, q, k, v))
    return tuple(t.contiguous() for t in mod.cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale))


@torch.library.custom_op("fasttrack::cross_attention", mutates_args=())
def cross_attention_op(q: Tensor, k: Tensor, v: Tensor, scale: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _cross_attention_fwd(q, k, v, scale, backend)


@cross_attention_op.register_fake
def _(q, k, v, scale, backend):
    return (q.new_empty(*q.shape[:3], v.shape[3]), q.new_empty(q.shape[0], q.shape[2], k.shape[2]),
            q.new_empty(q.shape[:3], dtype=_lse_dtype(q)))


@torch.library.custom_op("fasttrack::cross_attention_bwd", mutates_args=())
def cross_attention_bwd_op(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dout: Optional[Tensor],
                           dprobs: Optional[Tensor], scale: float, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    return _cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale, backend)


@cross_attention_bwd_op.register_fake
def _(q, k, v, out, lse, dout, dprobs, scale, backend):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _cross_attention_setup(ctx, inputs, output):
    q, k, v, scale, backend = inputs
    out, _, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale, ctx.backend = scale, backend


def _cross_attention_backward(ctx, dout, dprobs, _dlse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = cross_attention_bwd_op(q, k, v, out, lse, dout, dprobs, ctx.scale, ctx.backend)
    return dq, dk, dv, None, None


cross_attention_op.register_autograd(_cross_attention_backward, setup_context=_cross_attention_setup)


# ---------------------------------------------------------------- eager calls
# Outside torch.compile the custom ops cost ~30 us of dispatcher and Python per call before
# any work (a no-op custom op measured 30 us on a 2-core CPU, 3x one SDPA call), paid on every
# call of a tracker. In eager mode the ops therefore run the same implementation functions
# directly, wrapped in an autograd.Function only when a gradient is needed. The custom ops stay
# the path whenever something may be tracing: torch.compile, a dispatch mode (FakeTensorMode,
# FlopCounterMode, ...) or a tensor subclass.
_PLAIN = (Tensor, torch.nn.Parameter)
# Bound once: each attribute chain costs ~50 ns per call (Dynamo knows these by identity).
_is_compiling = torch.compiler.is_compiling
_dispatch_depth = torch._C._len_torch_dispatch_stack
_functorch_level = torch._C._functorch.peek_interpreter_stack
_grad_enabled = torch.is_grad_enabled


def mode(*tensors) -> int:
    """How fasttrack.ops runs a call on `tensors` (None entries allowed): 0 through the custom
    op (torch.compile tracing, a dispatch mode, a functorch transform such as vmap, or anything
    but plain tensors: e.g. a list where a tensor belongs then meets the full argument checks);
    1 eagerly without autograd; 2 eagerly through an autograd.Function (a gradient is needed).
    One pass over the tensors: this runs on every call."""
    if _is_compiling() or _dispatch_depth() or _functorch_level() is not None:
        return 0
    grad = False
    for t in tensors:
        if t is not None:
            if type(t) not in _PLAIN:
                return 0
            grad = grad or t.requires_grad
    return 2 if grad and _grad_enabled() else 1


class _AttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, backend, name):
        out, lse = backend_module(name).attention_fwd(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale, ctx.backend = scale, backend
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        return (*_attention_bwd(q, k, v, out, lse, dout, dlse, ctx.scale, ctx.backend), None, None, None)


class _SelfCrossFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cross, lse, scale, backend, name):
        out, lse_used = _self_cross_with(backend_module(name), q, k, cross, lse, scale)
        ctx.lse_given = lse is not None
        ctx.save_for_backward(q, k, cross, lse if ctx.lse_given else lse_used)
        ctx.scale, ctx.backend = scale, backend
        ctx.mark_non_differentiable(lse_used)
        ctx.set_materialize_grads(False)
        return out, lse_used

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, _dlse_used):
        q, k, cross, lse = ctx.saved_tensors
        dq, dk, dcross, dlse = _self_cross_bwd(q, k, cross, lse, dout, ctx.scale, ctx.lse_given, ctx.backend)
        return dq, dk, dcross, (dlse if ctx.lse_given else None), None, None, None


class _CrossAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, backend, name):
        out, probs, lse = backend_module(name).cross_attention_fwd(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale, ctx.backend = scale, backend
        ctx.mark_non_differentiable(lse)
        ctx.set_materialize_grads(False)
        return out, probs, lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dprobs, _dlse):
        q, k, v, out, lse = ctx.saved_tensors
        return (*_cross_attention_bwd(q, k, v, out, lse, dout, dprobs, ctx.scale, ctx.backend),
                None, None, None)


# The eager calls: `name` is the backend fasttrack.ops already selected (and validated for);
# `backend` is what the caller asked, which the backward selects with again; grad: mode() == 2.
def attention_eager(q, k, v, scale: float, backend: str, name: str, grad: bool) -> tuple[Tensor, Tensor]:
    if grad:
        return _AttentionFn.apply(q, k, v, scale, backend, name)
    return backend_module(name).attention_fwd(q, k, v, scale)


def self_cross_eager(q, k, cross, lse, scale: float, backend: str, name: str, grad: bool) -> Tensor:
    """S^T C alone (B, Nk, T) (the eager path has no use for the lse it computed)."""
    if grad:
        return _SelfCrossFn.apply(q, k, cross, lse, scale, backend, name)[0]
    mod = backend_module(name)
    if lse is not None:
        return mod.self_cross_fwd(q, k, cross, lse, scale)
    both = getattr(mod, "self_cross_lse_fwd", None)
    if both is not None:
        return both(q, k, cross, scale)[0]
    return mod.self_cross_fwd(q, k, cross, mod.lse_fwd(q, k, scale), scale)


def cross_attention_eager(q, k, v, scale: float, backend: str, name: str,
                          grad: bool) -> tuple[Tensor, Tensor, Tensor]:
    if grad:
        return _CrossAttentionFn.apply(q, k, v, scale, backend, name)
    return backend_module(name).cross_attention_fwd(q, k, v, scale)
