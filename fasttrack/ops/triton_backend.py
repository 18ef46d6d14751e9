"""The "triton" backend: the fused Triton kernels of fasttrack.kernels (docs/BACKENDS.md).

Triton is imported only when a primitive runs or `reasons` is asked, so `import fasttrack`
works without it. CUDA tensors run compiled kernels; with TRITON_INTERPRET=1 the same kernels
run on CPU tensors through Triton's interpreter (slow, for tests).

Launches are direct Triton launches (kernels/_common.launch): the ops are opaque custom ops under
torch.compile, so nothing needs to trace into them.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys

import torch

from .limits import TRITON as LIMITS

NAME = "triton"

# Which positional tensors each op passes to reasons(), by role (BACKENDS.md argument order;
# the dispatcher passes the forward inputs: (q, k, v) or (q, k, cross)).
_ROLES = {
    "lse": ("q", "k"),
    "attention": ("q", "k", "v", "out", "lse", "dout", "dlse"),
    "self_cross": ("q", "k", "cross", "lse", "dout"),
    "cross_attention": ("q", "k", "v", "out", "lse", "dout", "dprobs"),
    "box_branch": ("b", "k", "v"),
}

INTERPRET_ON_CUDA = ("TRITON_INTERPRET=1 is set: the Triton interpreter cannot run CUDA tensors; "
                     "unset it on a GPU machine")


@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    try:
        importlib.import_module("triton")
        importlib.import_module("triton.language")
    except Exception as e:  # any failure (missing, broken install) means no Triton backend
        return f"{type(e).__name__}: {e}"
    return None


_K = None  # fasttrack.kernels once imported: the launch calls read it as `(_K or _kernels())`


def _kernels():
    """fasttrack.kernels, imported on first use (import_module costs ~1 us per call; the
    callers skip even this frame once _K is set)."""
    global _K
    if _K is None:
        _K = importlib.import_module("fasttrack.kernels")
    return _K


def _family(op: str) -> str:
    for suffix in ("_fwd", "_bwd"):
        if op.endswith(suffix):
            op = op[: -len(suffix)]
    return op


def _kernels_imported_interpreted() -> bool:
    """Whether fasttrack.kernels was imported under TRITON_INTERPRET=1 (triton.jit picks the
    interpreter at import): its kernels then stay interpreted even after the variable is unset."""
    for name in ("fasttrack.kernels._interpret_guard", "kernels._interpret_guard"):
        mod = sys.modules.get(name)
        if mod is not None and mod.INTERPRETED:
            return True
    return False


def _interpreter_reasons(tensors) -> list[str]:
    """The interpreter must never run in a GPU process: refuse CUDA tensors while it is on."""
    if not any(t.device.type == "cuda" for t in tensors):
        return []
    if os.environ.get("TRITON_INTERPRET") == "1":
        return [INTERPRET_ON_CUDA]
    if _kernels_imported_interpreted():
        return ["fasttrack.kernels was imported under TRITON_INTERPRET=1: its kernels run on the "
                "interpreter, which cannot run CUDA tensors; import it without the variable"]
    return []


def reasons(op: str, *tensors) -> list[str]:
    """Why the Triton kernels cannot run `op` on `tensors` (empty list: they can).

    op: "attention", "self_cross", "cross_attention", "lse", "box_branch" or a primitive name
    of BACKENDS.md ("attention_fwd", "self_cross_bwd", ...). tensors: that op's tensor
    arguments in BACKENDS.md order (q, k, then v or cross, ...; b, k, v for box_branch); None
    entries are skipped. Device, dtype and size limits are fasttrack.ops.limits.TRITON's."""
    err = _triton_import_error()
    if err is not None:
        return [f"triton is not importable ({err})"]
    family = _family(op)
    if family not in _ROLES:
        return [f"unknown op {op!r} (known: {', '.join(sorted(_ROLES))})"]
    named = {role: t for role, t in zip(_ROLES[family], tensors) if isinstance(t, torch.Tensor)}
    if family == "box_branch":
        return _box_branch_reasons(named)
    if "q" not in named or "k" not in named:
        return [f"{op} needs tensors q and k"]
    q, k = named["q"], named["k"]
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    main = [named[r] for r in ("q", "k", "v", "cross") if r in named]
    v, cross = named.get("v"), named.get("cross")
    head_dims = {"head dim D": q.shape[-1]} if q.dim() == 4 else {}
    if v is not None and v.dim() == 4:
        head_dims["value head dim Dv"] = v.shape[-1]
    tokens = cross.shape[-1] if family == "self_cross" and cross is not None and cross.dim() == 3 else None
    # The flash and self x cross kernels put batch x heads on grid axis y (kernels/*.py).
    grid_yz = {"B x H": q.shape[0] * q.shape[1]} if q.dim() == 4 else None
    out = _interpreter_reasons(named.values())
    out += LIMITS.reasons(family, main, others=named.values(), head_dims=head_dims, tokens=tokens,
                          grid_yz=grid_yz,
                          devices=("cuda", "cpu") if interp else None,
                          device_hint="" if interp else
                          " (or TRITON_INTERPRET=1 to run its interpreter on the CPU)")
    if interp and any(t.dtype == torch.bfloat16 for t in main):
        out.append("bfloat16 math is not supported by the Triton interpreter (TRITON_INTERPRET=1)")
    if q.dim() != 4 or k.dim() != 4:
        out.append(f"q and k must be 4-D (B, H, N, D), got {tuple(q.shape)} and {tuple(k.shape)}")
        return out
    if k.shape[2] == 0:
        out.append("no keys (Nk = 0): the softmax is undefined")
    return out


def _box_branch_reasons(named: dict) -> list[str]:
    """The box branch kernel's reasons (kernels/box_branch.box_branch_reasons: limits, the
    interpreter's import-time choice, 16-bit math) plus the interpreter-on-CUDA refusal."""
    if "b" not in named:
        return ["box_branch needs tensor b"]
    out = _interpreter_reasons(named.values())
    try:
        kb = importlib.import_module("fasttrack.kernels.box_branch")
    except ImportError as e:
        return out + [f"cannot import fasttrack.kernels.box_branch: {e}"]
    return list(dict.fromkeys(out + kb.box_branch_reasons(*named.values())))


# The primitives run after fasttrack.ops checked the inputs and these reasons accepted them, so
# they call the launchers with checked=True (the launchers' own checks serve direct callers).


def lse_fwd(q, k, scale):
    """lse (B, H, Nq) float32 = log sum_j exp(scale q_i.k_j)."""
    return (_K or _kernels()).lse_fwd(q, k, scale, checked=True)


def attention_fwd(q, k, v, scale):
    """out (B, H, Nq, Dv) in q.dtype and lse (B, H, Nq) float32."""
    return (_K or _kernels()).attention_fwd(q, k, v, scale, checked=True)


def attention_bwd(q, k, v, out, lse, dout, dlse, scale):
    """(dq, dk, dv): FlashAttention-2 backward; dout / dlse may be None (zero)."""
    return (_K or _kernels()).attention_bwd(q, k, v, out, lse, dout, dlse, scale, checked=True)


def self_cross_fwd(q, k, cross, lse, scale):
    """(B, Nk, T) in cross.dtype: (1/H) sum_h P_h^T cross, P_h = exp(scale q k^T - lse_h)."""
    return (_K or _kernels()).self_cross_fwd(q, k, cross, lse, scale, checked=True)


def self_cross_lse_fwd(q, k, cross, scale):
    """(out (B, Nk, T), lse (B, H, Nq)): the lse pass, then the product (two kernels, one host
    call: each layer between them costs host time on every call)."""
    return (_K or _kernels()).self_cross_lse_fwd(q, k, cross, scale, checked=True)


def self_cross_bwd(q, k, cross, lse, dout, scale, lse_given):
    """(dq, dk, dcross, dlse or None) per BACKENDS.md; dout may be None (zero)."""
    return (_K or _kernels()).self_cross_bwd(q, k, cross, lse, dout, scale, lse_given)


def cross_attention_fwd(q, k, v, scale):
    """(out (B, H, Nq, Dv), probs (B, Nq, Nk) head mean, lse (B, H, Nq) float32)."""
    return (_K or _kernels()).cross_attention_fwd(q, k, v, scale, checked=True)


def cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale):
    """(dq, dk, dv) with dP_h += dprobs / H; dout / dprobs may be None (zero)."""
    return (_K or _kernels()).cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale)


def box_branch_fwd(b, k, v, weights, eps):
    """b_next (B, Nq, C) in b.dtype: the DeTrack box branch (kernels/box_branch.py); weights in
    fasttrack.ops.limits.BOX_BRANCH_WEIGHTS order, eps = (LN1, LN2) epsilons."""
    kb = importlib.import_module("fasttrack.kernels.box_branch")
    return kb.box_branch_fwd(b, k, v, weights, eps=tuple(eps))
