"""The "cuda" backend: the native forward kernels of fasttrack._C (csrc/, docs/BACKENDS.md).

The extension takes raw device pointers, sizes, strides in elements, a dtype code, the device
index and the stream handle, so any torch version drives it; outputs are allocated here, by
torch, on the inputs' device, and the kernels run on torch's current stream of that device.
Strided (non-contiguous) inputs are read in place.

Backward primitives delegate to the Triton backend (`fasttrack.ops.triton_backend`), imported
lazily; `reasons` for a `*_bwd` op therefore reports the Triton backend's reasons.

A correctness reference, not a fast path: the csrc kernels are scalar FFMA on float32
shared-memory tiles (no tensor cores), measured 4-19x slower than the Triton kernels on an H200
for attention and self_cross. backend="auto" never picks it: fasttrack.ops.dispatch only lets
"auto" take the ops in VERIFIED_CUDA_OPS, which is empty; ask for backend="cuda" by name (tests,
cross-checks against an independent implementation).

Run on a GPU once, an H200 (sm_90) on 2026-12-04: every forward passed tests/test_ops_gpu.py
and compute-sanitizer (benchmarks/results/gpu-h200-2026-12-04/); not run on sm_80. Since then the
lse kernel became the attention kernel without V (kHasV), every softmax goes through one
online-softmax update (csrc/common.cuh) and one params filler per struct (csrc/launch.h): that
refactored code has only been compiled with nvcc (sm_90) and run under the host emulation
(csrc/emulation, tests/test_build.py), not on a GPU.
"""
from __future__ import annotations

import functools
import importlib
import logging

import torch

from .._ext import CUDA_EXT, CUDA_EXT_ERROR, HAS_CUDA_EXT
from .limits import CUDA as LIMITS

NAME = "cuda"
log = logging.getLogger("fasttrack.dispatch")

# Must match csrc/params.h DType; the one table of codes (the box branch uses it too). Its keys
# are LIMITS.dtypes.
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
BOX_BRANCH_MAX_NQ = 8  # csrc/box_branch_kernel.cuh BoxBranchConfig::kMaxQ (box tokens in registers)

_FORWARD_OPS = ("lse", "attention", "self_cross", "cross_attention")
# Positional tensors the dispatcher passes, by op family (BACKENDS.md argument order).
_ROLES = {
    "lse": ("q", "k"),
    "attention": ("q", "k", "v"),
    "self_cross": ("q", "k", "cross", "lse"),
    "cross_attention": ("q", "k", "v"),
}


def _triton():
    return importlib.import_module("fasttrack.ops.triton_backend")


@functools.lru_cache(maxsize=None)
def cross_attention_max_nk(d: int, dv: int, device: int) -> int:
    """Largest key count cross_attention_fwd takes for head dims (d, dv) on a device: a score row
    of every key stays in shared memory (about 1600 keys on H100, 1080 on A100 at D = 128)."""
    return int(CUDA_EXT.cross_attention_max_nk(d, dv, device))


def reasons(op: str, *tensors) -> list[str]:
    """Why the CUDA kernels cannot run `op` on `tensors` (empty list: they can).

    op: "lse", "attention", "self_cross", "cross_attention" or a primitive name of BACKENDS.md;
    tensors: the op's tensors in BACKENDS.md order (q, k, then v or cross); None is skipped."""
    if op.endswith("_bwd"):
        family = op[: -len("_bwd")]
        if family not in _FORWARD_OPS:
            return [f"the CUDA backend has no op {op!r}"]
        try:
            tri = _triton()
        except ImportError as e:
            return [f"the CUDA backend's backward runs on the Triton backend, which cannot import: {e}"]
        return [f"backward on the Triton backend: {r}" for r in tri.reasons(op, *tensors)]
    family = op[: -len("_fwd")] if op.endswith("_fwd") else op
    if family == "box_branch":
        return _box_branch_reasons(tensors)
    if family not in _FORWARD_OPS:
        return [f"the CUDA backend has no op {op!r} (it has {', '.join(_FORWARD_OPS)}, box_branch)"]
    if not HAS_CUDA_EXT:
        return [f"the CUDA extension fasttrack._C is unavailable: {CUDA_EXT_ERROR}"]
    named = {r: t for r, t in zip(_ROLES[family], tensors) if isinstance(t, torch.Tensor)}
    if "q" not in named or "k" not in named:
        return [f"{op} needs tensors q and k"]
    q, k = named["q"], named["k"]
    main = [named[r] for r in ("q", "k", "v", "cross") if r in named]
    v, cross = named.get("v"), named.get("cross")
    if q.dim() != 4 or k.dim() != 4:
        out = LIMITS.reasons(family, main, others=named.values())
        out.append(f"q and k must be 4-D (B, H, N, D), got {tuple(q.shape)} and {tuple(k.shape)}")
        return out
    b, h, nq, d = q.shape
    nk = k.shape[2]
    dv = v.shape[-1] if v is not None and v.dim() == 4 else 0
    head_dims = {"head dim D": d, "value head dim Dv": dv}
    tokens = cross.shape[-1] if family == "self_cross" and cross is not None and cross.dim() == 3 else None
    out = LIMITS.reasons(family, main, others=named.values(), head_dims=head_dims, tokens=tokens,
                         grid_yz={"B": b, "H": h}, seq_len=max(nq, nk))
    if nk == 0:
        out.append("no keys (Nk = 0): the softmax is undefined")
    if family == "cross_attention" and not out and dv > 0:
        limit = cross_attention_max_nk(d, dv, q.device.index)
        if nk > limit:
            out.append(f"Nk={nk} keys > {limit}, the most the CUDA cross-attention kernel keeps in "
                       f"shared memory on {torch.cuda.get_device_name(q.device)} at D={d}, Dv={dv}")
    return out


def _box_branch_reasons(tensors) -> list[str]:
    """box_branch (b, k, v): the extension built with box_branch_fwd, CUDA tensors of one
    float32 / float16 / bfloat16 dtype (no float64), at most BOX_BRANCH_MAX_NQ box tokens."""
    if not HAS_CUDA_EXT:
        return [f"the CUDA extension fasttrack._C is unavailable: {CUDA_EXT_ERROR}"]
    if not hasattr(CUDA_EXT, "box_branch_fwd"):
        return ["fasttrack._C was built without box_branch_fwd (csrc/box_branch.cu)"]
    b = tensors[0] if tensors else None
    if not isinstance(b, torch.Tensor):
        return ["box_branch needs tensor b"]
    out = LIMITS.reasons("box_branch", tensors)
    if b.dim() == 3 and b.shape[1] > BOX_BRANCH_MAX_NQ:
        out.append(f"Nq={b.shape[1]} box tokens > {BOX_BRANCH_MAX_NQ}, the rows the CUDA box branch "
                   "keeps in registers")
    return out


def _require():
    if not HAS_CUDA_EXT:
        raise RuntimeError(f"the CUDA extension fasttrack._C is unavailable: {CUDA_EXT_ERROR}")
    return CUDA_EXT


def _launch_args(q: torch.Tensor) -> dict:
    return {"dtype": _DTYPE_CODES[q.dtype], "device": q.device.index,
            "stream": torch.cuda.current_stream(q.device).cuda_stream}


def _as_float32(lse: torch.Tensor) -> torch.Tensor:
    return lse if lse.dtype == torch.float32 else lse.float()


def lse_fwd(q, k, scale):
    """lse (B, H, Nq) float32 = log sum_j exp(scale q_i.k_j)."""
    ext = _require()
    b, h, nq, d = q.shape
    lse = torch.empty((b, h, nq), dtype=torch.float32, device=q.device)
    log.debug("cuda: attention_fwd_kernel (lse only) B=%d H=%d Nq=%d Nk=%d D=%d %s", b, h, nq, k.shape[2], d, q.dtype)
    ext.lse_fwd(q=q.data_ptr(), k=k.data_ptr(), lse=lse.data_ptr(), B=b, H=h, Nq=nq, Nk=k.shape[2], D=d,
                q_stride=list(q.stride()), k_stride=list(k.stride()), lse_stride=list(lse.stride()),
                scale=float(scale), **_launch_args(q))
    return lse


def attention_fwd(q, k, v, scale):
    """out (B, H, Nq, Dv) in q.dtype and lse (B, H, Nq) float32."""
    ext = _require()
    b, h, nq, d = q.shape
    nk, dv = k.shape[2], v.shape[3]
    out = torch.empty((b, h, nq, dv), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h, nq), dtype=torch.float32, device=q.device)
    log.debug("cuda: attention_fwd_kernel B=%d H=%d Nq=%d Nk=%d D=%d Dv=%d %s", b, h, nq, nk, d, dv, q.dtype)
    ext.attention_fwd(q=q.data_ptr(), k=k.data_ptr(), v=v.data_ptr(), out=out.data_ptr(), lse=lse.data_ptr(),
                      B=b, H=h, Nq=nq, Nk=nk, D=d, Dv=dv, q_stride=list(q.stride()), k_stride=list(k.stride()),
                      v_stride=list(v.stride()), out_stride=list(out.stride()), lse_stride=list(lse.stride()),
                      scale=float(scale), **_launch_args(q))
    return out, lse


def self_cross_fwd(q, k, cross, lse, scale):
    """(B, Nk, T) in cross.dtype (= q.dtype): (1/H) sum_h P_h^T cross, P_h = exp(scale q k^T - lse_h)."""
    ext = _require()
    b, h, nq, d = q.shape
    nk, t = k.shape[2], cross.shape[2]
    lse = _as_float32(lse)
    out = torch.empty((b, nk, t), dtype=q.dtype, device=q.device)
    log.debug("cuda: self_cross_fwd_kernel B=%d H=%d Nq=%d Nk=%d D=%d T=%d %s", b, h, nq, nk, d, t, q.dtype)
    ext.self_cross_fwd(q=q.data_ptr(), k=k.data_ptr(), cross=cross.data_ptr(), lse=lse.data_ptr(),
                       out=out.data_ptr(), B=b, H=h, Nq=nq, Nk=nk, D=d, T=t, q_stride=list(q.stride()),
                       k_stride=list(k.stride()), cross_stride=list(cross.stride()),
                       lse_stride=list(lse.stride()), out_stride=list(out.stride()), scale=float(scale),
                       **_launch_args(q))
    return out


def cross_attention_fwd(q, k, v, scale):
    """(out (B, H, Nq, Dv), probs (B, Nq, Nk) head mean, both in q.dtype, lse (B, H, Nq) float32)."""
    ext = _require()
    b, h, nq, d = q.shape
    nk, dv = k.shape[2], v.shape[3]
    out = torch.empty((b, h, nq, dv), dtype=q.dtype, device=q.device)
    probs = torch.empty((b, nq, nk), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h, nq), dtype=torch.float32, device=q.device)
    log.debug("cuda: cross_attention_fwd_kernel B=%d H=%d Nq=%d Nk=%d D=%d Dv=%d %s", b, h, nq, nk, d, dv, q.dtype)
    ext.cross_attention_fwd(q=q.data_ptr(), k=k.data_ptr(), v=v.data_ptr(), out=out.data_ptr(),
                            probs=probs.data_ptr(), lse=lse.data_ptr(), B=b, H=h, Nq=nq, Nk=nk, D=d, Dv=dv,
                            q_stride=list(q.stride()), k_stride=list(k.stride()), v_stride=list(v.stride()),
                            out_stride=list(out.stride()), probs_stride=list(probs.stride()),
                            lse_stride=list(lse.stride()), scale=float(scale), **_launch_args(q))
    return out, probs, lse


def attention_bwd(q, k, v, out, lse, dout, dlse, scale):
    """(dq, dk, dv), on the Triton backend."""
    log.debug("cuda: attention_bwd delegated to the Triton backend")
    return _triton().attention_bwd(q, k, v, out, lse, dout, dlse, scale)


def self_cross_bwd(q, k, cross, lse, dout, scale, lse_given):
    """(dq, dk, dcross, dlse or None), on the Triton backend."""
    log.debug("cuda: self_cross_bwd delegated to the Triton backend")
    return _triton().self_cross_bwd(q, k, cross, lse, dout, scale, lse_given)


def cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale):
    """(dq, dk, dv), on the Triton backend."""
    log.debug("cuda: cross_attention_bwd delegated to the Triton backend")
    return _triton().cross_attention_bwd(q, k, v, out, lse, dout, dprobs, scale)


def box_branch_fwd(b, k, v, weights, eps):
    """b_next (B, Nq, C) in b.dtype: the fused box branch of csrc/box_branch.cu. weights in
    fasttrack.ops.limits.BOX_BRANCH_WEIGHTS order, eps = (LN1, LN2) epsilons; k, v are read in
    place through their strides."""
    ext = _require()
    b = b.contiguous()
    B, nq, C = b.shape
    ws = [w.contiguous() for w in weights]
    hidden, noise_hidden = ws[8].shape[0], ws[12].shape[0]
    work = torch.empty((B, ext.box_branch_workspace(nq, C, hidden, noise_hidden)),
                       dtype=torch.float32, device=b.device)
    out = torch.empty_like(b)
    log.debug("cuda: box_branch_fwd_kernel B=%d Nq=%d Ns=%d C=%d H=%d %s", B, nq, k.shape[2], C,
              k.shape[1], b.dtype)
    ext.box_branch_fwd(b.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), work.data_ptr(),
                       [w.data_ptr() for w in ws], B, nq, k.shape[2], C, k.shape[1], hidden,
                       noise_hidden, list(b.stride()), list(k.stride()), list(v.stride()),
                       list(out.stride()), float(eps[0]), float(eps[1]), _DTYPE_CODES[b.dtype],
                       b.device.index or 0, torch.cuda.current_stream(b.device).cuda_stream)
    return out
