"""The "triton" backend: the fused Triton kernels of fasttrack.kernels (docs/BACKENDS.md).

Triton is imported only when a primitive runs or `reasons` is asked, so `import fasttrack`
works without it. CUDA tensors run compiled kernels; with TRITON_INTERPRET=1 the same kernels
run on CPU tensors through Triton's interpreter (slow, for tests).

Launches go through torch.library.wrap_triton (kernels/_common.launch), which also works under
the interpreter, so a later torch.library.triton_op registration can trace them.
"""
from __future__ import annotations

import functools
import importlib
import os

import torch

NAME = "triton"

MAX_HEAD_DIM = 128  # D and Dv: one padded (block, 128) tile per operand
MAX_TOKENS = 256  # T of self_cross: its backward keeps whole token rows in one tile
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# Which positional tensors each op passes to reasons(), by role (BACKENDS.md argument order;
# the dispatcher passes the forward inputs: (q, k, v) or (q, k, cross)).
_ROLES = {
    "lse": ("q", "k"),
    "attention": ("q", "k", "v", "out", "lse", "dout", "dlse"),
    "self_cross": ("q", "k", "cross", "lse", "dout"),
    "cross_attention": ("q", "k", "v", "out", "lse", "dout", "dprobs"),
}


@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    try:
        importlib.import_module("triton")
        importlib.import_module("triton.language")
    except Exception as e:  # any failure (missing, broken install) means no Triton backend
        return f"{type(e).__name__}: {e}"
    return None


def _kernels():
    return importlib.import_module("fasttrack.kernels")


def _family(op: str) -> str:
    for suffix in ("_fwd", "_bwd"):
        if op.endswith(suffix):
            op = op[: -len(suffix)]
    return op


def reasons(op: str, *tensors) -> list[str]:
    """Why the Triton kernels cannot run `op` on `tensors` (empty list: they can).

    op: "attention", "self_cross", "cross_attention", "lse" or a primitive name of
    BACKENDS.md ("attention_fwd", "self_cross_bwd", ...). tensors: that op's tensor arguments
    in BACKENDS.md order (q, k, then v or cross, ...); None entries are skipped."""
    err = _triton_import_error()
    if err is not None:
        return [f"triton is not importable ({err})"]
    family = _family(op)
    if family not in _ROLES:
        return [f"unknown op {op!r} (known: {', '.join(sorted(_ROLES))})"]
    named = {role: t for role, t in zip(_ROLES[family], tensors) if isinstance(t, torch.Tensor)}
    if "q" not in named or "k" not in named:
        return [f"{op} needs tensors q and k"]
    q, k = named["q"], named["k"]
    out: list[str] = []
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    devices = {t.device for t in named.values()}
    if len(devices) > 1:
        out.append(f"tensors on several devices: {sorted(str(d) for d in devices)}")
    for d in sorted(devices, key=str):
        if d.type == "cpu" and not interp:
            out.append("tensors are on the CPU: Triton needs CUDA tensors "
                       "(or TRITON_INTERPRET=1 to run its interpreter on the CPU)")
        elif d.type not in ("cpu", "cuda"):
            out.append(f"tensors on {d.type}: the Triton kernels run on CUDA devices only")
    main = [named[r] for r in ("q", "k", "v", "cross") if r in named]
    for t in main:
        if t.dtype not in _DTYPES:
            out.append(f"dtype {t.dtype} is not supported (float16, bfloat16, float32)")
            break
    if interp and any(t.dtype == torch.bfloat16 for t in main):
        out.append("bfloat16 math is not supported by the Triton interpreter (TRITON_INTERPRET=1)")
    if q.dim() != 4 or k.dim() != 4:
        out.append(f"q and k must be 4-D (B, H, N, D), got {tuple(q.shape)} and {tuple(k.shape)}")
        return out
    if q.shape[-1] > MAX_HEAD_DIM:
        out.append(f"head dim D={q.shape[-1]} > {MAX_HEAD_DIM}")
    if k.shape[2] == 0:
        out.append("no keys (Nk = 0): the softmax is undefined")
    v = named.get("v")
    if v is not None and v.dim() == 4 and v.shape[-1] > MAX_HEAD_DIM:
        out.append(f"value head dim Dv={v.shape[-1]} > {MAX_HEAD_DIM}")
    cross = named.get("cross")
    if family == "self_cross" and cross is not None and cross.dim() == 3:
        if cross.shape[-1] > MAX_TOKENS:
            out.append(f"cross has T={cross.shape[-1]} tokens > {MAX_TOKENS}")
    return out


def lse_fwd(q, k, scale):
    """lse (B, H, Nq) float32 = log sum_j exp(scale q_i.k_j)."""
    return _kernels().lse_fwd(q, k, scale)


def attention_fwd(q, k, v, scale):
    """out (B, H, Nq, Dv) in q.dtype and lse (B, H, Nq) float32."""
    return _kernels().attention_fwd(q, k, v, scale)


def attention_bwd(q, k, v, out, lse, dout, dlse, scale):
    """(dq, dk, dv): FlashAttention-2 backward; dout / dlse may be None (zero)."""
    return _kernels().attention_bwd(q, k, v, out, lse, dout, dlse, scale)


def self_cross_fwd(q, k, cross, lse, scale):
    """(B, Nk, T) in cross.dtype: (1/H) sum_h P_h^T cross, P_h = exp(scale q k^T - lse_h)."""
    return _kernels().self_cross_fwd(q, k, cross, lse, scale)


def self_cross_bwd(q, k, cross, lse, dout, scale, lse_given):
    """(dq, dk, dcross, dlse or None) per BACKENDS.md; dout may be None (zero)."""
    return _kernels().self_cross_bwd(q, k, cross, lse, dout, scale, lse_given)


def cross_attention_fwd(q, k, v, scale):
    """(out (B, H, Nq, Dv), probs (B, Nq, Nk) head mean, lse (B, H, Nq) float32)."""
    return _kernels().cross_attention_fwd(q, k, v, scale)


def cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale):
    """(dq, dk, dv) with dP_h += dprobs / H; dout / dprobs may be None (zero)."""
    return _kernels().cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale)
