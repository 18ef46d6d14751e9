"""The "aten" backend: attention and its row log-sum-exp from PyTorch's own fused kernels.

PyTorch's fused attention kernels already compute the row log-sum-exp L that fasttrack's maps
need; SDPA just drops it. This backend calls them directly:

    CPU   aten::_scaled_dot_product_flash_attention_for_cpu (+ _backward): float16, bfloat16,
          float32, float64; any head dim.
    CUDA  aten::_scaled_dot_product_flash_attention (+ _backward) for float16 / bfloat16, and
          aten::_scaled_dot_product_efficient_attention (+ _backward) for float32 or when flash
          is switched off (torch.backends.cuda.enable_flash_sdp(False)); head dims <= 256.
          UNVERIFIED: no GPU has run this path yet (checked here only on meta tensors, which
          run PyTorch's shape functions of the same ops); "auto" therefore takes this backend
          only on the CPU until a committed GPU run shows it correct (dispatch.ATEN_AUTO_DEVICES).

Head dims. The kernels want one head size for q, k and v (CUDA: a multiple of 8). Inputs are
padded with zero columns to a common size Dp: zero columns of q and k add nothing to q.k, zero
columns of v give zero output columns, which are sliced off. The scale is always passed
explicitly, since padding changes the head size the kernels would derive it from.

Gradient of the lse (the augmented column). The aten backward has no input for dL. With
V' = [V, 0], O' = [O, 1], dO' = [dO, -dL] it computes delta' = rowsum(dO' * O') = delta - dL, so
its dS = P * (dP - delta') = P * (dP - delta + dL): exactly the gradient of <O, dO> + <L, dL>
(dP = dO' V'^T = dO V^T is unchanged, the extra column of dV' is dropped). One more column of
work in the backward.

Shapes: q (B, H, Nq, D), k (B, H, Nk, D), v (B, H, Nk, Dv) -> out (B, H, Nq, Dv) in q.dtype,
lse (B, H, Nq) float32 (float64 for float64 inputs, in natural log). `out` keeps the kernel's
layout (as SDPA's does: (B, Nq, H, Dv) memory on the CPU); the custom op makes it contiguous.
"""
from __future__ import annotations

import functools

import torch

from .limits import ATEN as LIMITS

NAME = "aten"

_FAMILIES = ("attention", "lse")
_ROLES = {
    "attention": ("q", "k", "v", "out", "lse", "dout", "dlse"),
    "lse": ("q", "k"),
}
_CPU_FWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
_CPU_BWD = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default
CUDA_MAX_HEAD_DIM = 256  # flash / memory-efficient kernels of PyTorch (after padding to 8)


def _family(op: str) -> str:
    for suffix in ("_fwd", "_bwd"):
        if op.endswith(suffix):
            return op[: -len(suffix)]
    return op


def reasons(op: str, *tensors) -> list[str]:
    """Why PyTorch's fused kernels cannot run `op` on `tensors` (empty list: they can).

    op: "attention" or "lse" (or their _fwd / _bwd primitives); the other ops need maps these
    kernels do not return. tensors: q, k, v, out, lse, dout, dlse (None entries skipped)."""
    family = _family(op)
    if family not in _FAMILIES:
        return [f"the aten backend runs attention and lse only; {family} needs a map PyTorch's "
                "fused attention kernels do not return"]
    named = {role: t for role, t in zip(_ROLES[family], tensors) if isinstance(t, torch.Tensor)}
    if "q" not in named or "k" not in named:
        return [f"{op} needs tensors q and k"]
    q, k, v = named["q"], named["k"], named.get("v")
    main = [t for t in (q, k, v) if t is not None]
    out = LIMITS.reasons(family, main, others=named.values())
    if q.dim() != 4 or k.dim() != 4 or (v is not None and v.dim() != 4):
        out.append("q, k and v must be 4-D (B, H, N, D)")
        return out
    if k.shape[2] == 0:
        out.append("no keys (Nk = 0): the softmax is undefined")
    if q.device.type == "cuda":
        if q.dtype == torch.float64:
            out.append("float64 on CUDA: PyTorch's fused attention kernels take 16- and 32-bit floats")
        dp = _head_size(q.shape[-1], v.shape[-1] if v is not None else 1, True, 8)
        if dp > CUDA_MAX_HEAD_DIM:
            out.append(f"head dim {dp} (padded, with the lse-gradient column) > {CUDA_MAX_HEAD_DIM}")
        if not (torch.backends.cuda.flash_sdp_enabled() or torch.backends.cuda.mem_efficient_sdp_enabled()):
            out.append("both the flash and the memory-efficient SDPA kernels are disabled "
                       "(torch.backends.cuda.enable_*_sdp)")
    return out


def _head_size(d: int, dv: int, augmented: bool, multiple: int) -> int:
    """The common head size: max(D, Dv [+ 1 for the augmented column]), rounded up."""
    n = max(d, dv + int(augmented))
    return -(-n // multiple) * multiple


def _pad(x: torch.Tensor, size: int, fill_col: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., n) with zero columns up to `size`; `fill_col` (...,) goes in column n."""
    n = x.shape[-1]
    if n == size and fill_col is None:
        return x
    out = x.new_zeros(*x.shape[:-1], size)
    out[..., :n] = x
    if fill_col is not None:
        out[..., n] = fill_col
    return out


def _use_flash(q: torch.Tensor) -> bool:
    """CUDA: flash for 16-bit inputs while it is enabled on sm_80 or newer (PyTorch's flash
    kernels' floor); the memory-efficient kernel else."""
    return (q.dtype in (torch.float16, torch.bfloat16) and torch.backends.cuda.flash_sdp_enabled()
            and (not q.is_cuda or _major(q.get_device()) >= 8))  # meta tensors: as on sm_80+


@functools.lru_cache(maxsize=None)
def _major(index: int) -> int:
    return torch.cuda.get_device_capability(index)[0]


def _kernel_fwd(q, k, v, scale):
    """One aten forward on equal head sizes: (out, lse). The backward needs nothing else of it
    without dropout (_kernel_bwd)."""
    if q.is_cpu:
        return _CPU_FWD(q, k, v, 0.0, False, scale=scale)
    q, k, v = _unit_stride(q), _unit_stride(k), _unit_stride(v)
    if _use_flash(q):
        r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
        return r[0], r[1]
    out, lse, _, _ = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, None, True, 0.0, False, scale=scale)
    # The memory-efficient kernel pads the lse rows to a multiple of 32.
    return out, lse[..., : q.shape[2]]


def _kernel_bwd(dout, q, k, v, out, lse, scale):
    """One aten backward on equal head sizes, recomputing nothing but the kernel's own state."""
    if q.is_cpu:
        return _CPU_BWD(dout, q, k, v, out, lse, 0.0, False, scale=scale)
    # Forward state of the CUDA kernels: without dropout neither reads its rng state (seed and
    # offset are passed as 0-d int64 tensors, the non-varlen flash kernel's cumulative sequence
    # lengths as empty ones); the memory-efficient kernel's lse is padded to 32 rows.
    b, h, nq, nk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    dout, q, k, v, out = (_unit_stride(t) for t in (dout, q, k, v, out))
    zero = q.new_zeros((), dtype=torch.int64)
    if _use_flash(q):
        empty = q.new_empty(0, dtype=torch.int32)
        return torch.ops.aten._scaled_dot_product_flash_attention_backward(
            dout, q, k, v, out, lse, empty, empty, nq, nk, 0.0, False, zero, zero, scale=scale)
    lse32 = lse.new_zeros(b, h, -(-nq // 32) * 32)
    lse32[..., :nq] = lse
    dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
        dout, q, k, v, None, out, lse32, zero, zero, 0.0, [True, True, True, False], False, scale=scale)
    return dq, dk, dv


def _unit_stride(t: torch.Tensor) -> torch.Tensor:
    """t with a unit stride in its last dim (what the CUDA kernels address), copied if not."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _multiple(q: torch.Tensor) -> int:
    """Head sizes the kernels take: any on the CPU, multiples of 8 on CUDA."""
    return 1 if q.is_cpu else 8


def attention_fwd(q, k, v, scale):
    """out (B, H, Nq, Dv) in q.dtype and lse (B, H, Nq) float32 (float64 for float64)."""
    d, dv = q.shape[-1], v.shape[-1]
    dp = _head_size(d, dv, False, _multiple(q))
    out, lse = _kernel_fwd(_pad(q, dp), _pad(k, dp), _pad(v, dp), scale)
    if dp != dv:
        out = out[..., :dv]
    return out, lse


def lse_fwd(q, k, scale):
    """lse (B, H, Nq) = log sum_j exp(scale q_i.k_j): the forward with a zero value column."""
    v = q.new_zeros(*k.shape[:3], 1)
    return attention_fwd(q, k, v, scale)[1]


def attention_bwd(q, k, v, out, lse, dout, dlse, scale):
    """(dq, dk, dv) of <out, dout> + <lse, dlse>; dout / dlse may be None (zero).

    With dlse, the augmented column (module docstring) carries -dlse through the kernel's own
    delta = rowsum(dO O)."""
    d, dv = q.shape[-1], v.shape[-1]
    aug = dlse is not None
    dp = _head_size(d, dv, aug, _multiple(q))
    if dout is None:
        dout = torch.zeros_like(out)
    ones = out.new_ones(out.shape[:3]) if aug else None
    neg_dlse = (-dlse).to(dout.dtype) if aug else None
    qp, kp, vp = _pad(q, dp), _pad(k, dp), _pad(v, dp)
    outp, doutp = _pad(out, dp, ones), _pad(dout.to(out.dtype), dp, neg_dlse)
    dq, dk, dvp = _kernel_bwd(doutp, qp, kp, vp, outp, lse.to(torch.float64 if q.dtype == torch.float64
                                                               else torch.float32).contiguous(), scale)
    return dq[..., :d], dk[..., :d], dvp[..., :dv]
