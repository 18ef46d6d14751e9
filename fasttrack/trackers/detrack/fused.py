"""Fused box branch: the whole box branch of a denoising block in one launch, batched over
targets, and its `fasttrack.patch` registration (importing this module registers the swap).

`FusedBoxBranch` is a `BoxBranch` twin that shares the original's submodules (so its
parameters, state_dict keys and checkpoints are the same objects and names) and computes the
same function with one of three backends:

- "triton": kernels/box_branch.py, one program per target (on CPU only when
  TRITON_INTERPRET=1 was set before the kernel module was imported);
- "cuda": the CUDA kernel of csrc/box_branch.cu through fasttrack._C (needs the built extension
  and a GPU; never chosen by "auto", since it has not been run on a GPU yet);
- "torch": a lean PyTorch version (rows of all targets flattened into (B*Nq, C) matmuls with
  fused bias/residual `addmm`s and SDPA on the strided K/V views, no per-target loop);
- "auto": "triton" for CUDA tensors when triton imports, else "torch".

The fused paths are inference-only: when autograd is recording (grad enabled and any input or
weight requires grad) the module runs the reference BoxBranch.forward, so a patched tracker
still trains.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ...patch import register_swap
from .box_branch import BoxBranch, check_box_branch_inputs

__all__ = ["FusedBoxBranch", "make_fused", "box_branch_torch", "BACKENDS"]

BACKENDS = ("auto", "triton", "cuda", "torch")

_WEIGHT_ATTRS = ("norm1.weight", "norm1.bias", "q.weight", "q.bias", "proj.weight", "proj.bias",
                 "norm2.weight", "norm2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                 "noise1.weight", "noise1.bias", "noise2.weight", "noise2.bias")


def _triton_kernels():
    """The Triton launcher module, or None when triton is missing. Tries the installed
    package (fasttrack.kernels) first, then the repository's kernels/ folder."""
    try:
        from fasttrack.kernels import box_branch  # type: ignore[attr-defined]
        return box_branch
    except ImportError:
        pass
    try:
        from kernels import box_branch  # repository checkout without setup.py
        return box_branch
    except ImportError:
        return None


def _cuda_ext():
    try:
        from fasttrack import _C  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _C if hasattr(_C, "box_branch_fwd") else None


def box_branch_torch(m: BoxBranch, b: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The "torch" backend: b (B, Nq, C), k, v (B, H, Ns, D) -> (B, Nq, C)."""
    B, nq, C = b.shape
    x = b.reshape(B * nq, C)
    h = F.layer_norm(x, (C,), m.norm1.weight, m.norm1.bias, m.norm1.eps)
    q = torch.addmm(m.q.bias, h, m.q.weight.t()).view(B, nq, m.heads, m.head_dim).transpose(1, 2)
    a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B * nq, C)
    b1 = torch.addmm(m.proj.bias, a, m.proj.weight.t()).add_(x)
    hid = F.gelu(torch.addmm(m.fc1.bias, F.layer_norm(b1, (C,), m.norm2.weight, m.norm2.bias,
                                                      m.norm2.eps), m.fc1.weight.t()))
    b2 = torch.addmm(m.fc2.bias, hid, m.fc2.weight.t()).add_(b1)
    eps_hat = torch.addmm(m.noise2.bias, torch.relu_(torch.addmm(m.noise1.bias, b2, m.noise1.weight.t())),
                          m.noise2.weight.t())
    return b2.sub_(eps_hat).view(B, nq, C)


def _weights(m: BoxBranch) -> list[torch.Tensor]:
    return [m.get_parameter(name) for name in _WEIGHT_ATTRS]


def _box_branch_cuda(m: BoxBranch, b, k, v):
    ext = _cuda_ext()
    b = b.contiguous()
    B, nq, C = b.shape
    ws = [w.contiguous() for w in _weights(m)]
    work = torch.empty((B, ext.box_branch_workspace(nq, C, m.hidden, m.noise_hidden)),
                       dtype=torch.float32, device=b.device)
    out = torch.empty_like(b)
    codes = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
    ext.box_branch_fwd(b.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), work.data_ptr(),
                       [w.data_ptr() for w in ws], B, nq, k.shape[2], C, m.heads, m.hidden,
                       m.noise_hidden, list(b.stride()), list(k.stride()), list(v.stride()),
                       list(out.stride()), m.norm1.eps, m.norm2.eps, codes[b.dtype],
                       b.device.index or 0, torch.cuda.current_stream(b.device).cuda_stream)
    return out


class FusedBoxBranch(BoxBranch):
    """BoxBranch computed by one fused launch (see module docstring). Build with
    `FusedBoxBranch.from_reference(ref, backend)`; shares ref's parameters."""

    backend: str

    @classmethod
    def from_reference(cls, ref: BoxBranch, backend: str = "auto") -> "FusedBoxBranch":
        if not isinstance(ref, BoxBranch):
            raise TypeError(f"ref must be a BoxBranch, got {type(ref).__name__}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        fused = cls.__new__(cls)
        torch.nn.Module.__init__(fused)
        for name, child in ref.named_children():
            setattr(fused, name, child)
        for attr in ("dim", "heads", "head_dim", "hidden", "noise_hidden"):
            setattr(fused, attr, getattr(ref, attr))
        fused.backend = backend
        fused.train(ref.training)
        return fused

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}, backend={self.backend!r}"

    def resolve_backend(self, b: torch.Tensor) -> str:
        """The backend that runs on tensors like b; ValueError when a forced one cannot."""
        forced = os.environ.get("FASTTRACK_BACKEND")
        backend = forced if self.backend == "auto" and forced in BACKENDS[1:] else self.backend
        kern = _triton_kernels()
        if backend == "auto":
            ok = b.is_cuda and kern is not None and not kern.box_branch_reasons(b)
            return "triton" if ok else "torch"
        if backend == "triton":
            if kern is None:
                raise ValueError("backend 'triton' needs triton (pip install triton)")
            reasons = kern.box_branch_reasons(b)
            if reasons:
                raise ValueError("backend 'triton' cannot run here: " + "; ".join(reasons))
        if backend == "cuda" and (not b.is_cuda or _cuda_ext() is None or b.dtype == torch.float64):
            raise ValueError("backend 'cuda' needs float32/float16/bfloat16 CUDA tensors and "
                             "fasttrack._C built with box_branch_fwd")
        return backend

    def forward(self, b: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Same contract as BoxBranch.forward; falls back to it while autograd records."""
        if torch.is_grad_enabled() and (b.requires_grad or k.requires_grad or v.requires_grad
                                        or any(p.requires_grad for p in self.parameters())):
            return super().forward(b, k, v)
        check_box_branch_inputs(b, k, v, self.dim, self.heads)
        backend = self.resolve_backend(b)
        if backend == "torch":
            return box_branch_torch(self, b, k, v)
        if backend == "cuda":
            return _box_branch_cuda(self, b, k, v)
        return _triton_kernels().box_branch_fwd(b, k, v, _weights(self),
                                                eps=(self.norm1.eps, self.norm2.eps))


def make_fused(module: BoxBranch, backend: str) -> FusedBoxBranch:
    """Patch rule: the fused twin of a BoxBranch (weights shared)."""
    return FusedBoxBranch.from_reference(module, backend)


register_swap(BoxBranch, make_fused, name="DeTrack BoxBranch")
