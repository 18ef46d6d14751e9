"""Fused box branch: the whole box branch of a denoising block batched over targets, and its
`fasttrack.patch` registration (importing this module registers the swap).

`FusedBoxBranch` is a `BoxBranch` twin that shares the original's submodules (so its
parameters, state_dict keys and checkpoints are the same objects and names) and computes the
same function through fasttrack.ops.dispatch, op family "box_branch" (tensors b, k, v), like
every fused op of fasttrack: one backend list, one FASTTRACK_BACKEND override, one set of
limits (fasttrack.ops.limits). Each backend module has a `box_branch_fwd(b, k, v, weights,
eps)` primitive:

- "triton": kernels/box_branch.py (on CPU only when TRITON_INTERPRET=1 was set before the kernel
  module was imported); never chosen by "auto" until a GPU has timed it against PyTorch
  (dispatch.TRITON_AUTO_EXCLUDED);
- "cuda": the CUDA kernel of csrc/box_branch.cu through fasttrack._C (needs the built extension
  and a GPU; never chosen by "auto", since it has not been run on a GPU yet);
- "torch": a lean PyTorch version (rows of all targets flattened into (B*Nq, C) matmuls with
  fused bias/residual `addmm`s and SDPA on the strided K/V views, no per-target loop);
- "auto": the dispatcher's choice, which today is "torch".

The fused paths are inference-only: when autograd is recording (grad enabled and any input or
weight requires grad) the module runs the reference BoxBranch.forward, so a patched tracker
still trains.
"""
from __future__ import annotations

import torch

from ...ops import dispatch
from ...ops.limits import BOX_BRANCH_WEIGHTS
from ...patch import register_swap
from .box_branch import BoxBranch, autocast_on, check_box_branch_inputs

__all__ = ["FusedBoxBranch", "make_fused", "box_branch_torch"]


def _weights(m: BoxBranch) -> list[torch.Tensor]:
    return [m.get_parameter(name) for name in BOX_BRANCH_WEIGHTS]


def box_branch_torch(m: BoxBranch, b: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The "torch" backend on module m's weights: b (B, Nq, C), k, v (B, H, Ns, D) -> (B, Nq, C)."""
    return dispatch.backend_module("torch").box_branch_fwd(b, k, v, _weights(m),
                                                           (m.norm1.eps, m.norm2.eps))


class FusedBoxBranch(BoxBranch):
    """BoxBranch computed by one fused launch (see module docstring). Build with
    `FusedBoxBranch.from_reference(ref, backend)`; shares ref's parameters."""

    backend: str

    @classmethod
    def from_reference(cls, ref: BoxBranch, backend: str = "auto") -> "FusedBoxBranch":
        if not isinstance(ref, BoxBranch):
            raise TypeError(f"ref must be a BoxBranch, got {type(ref).__name__}")
        dispatch.check_backend(backend)
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

    def resolve_backend(self, b: torch.Tensor, k: torch.Tensor | None = None,
                        v: torch.Tensor | None = None) -> str:
        """The backend that runs on tensors like (b, k, v): dispatch.select("box_branch", ...);
        dispatch.BackendUnavailable (a ValueError) listing the reasons when a forced one cannot."""
        return dispatch.select("box_branch", self.backend, *(t for t in (b, k, v) if t is not None))

    def forward(self, b: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Same contract as BoxBranch.forward; falls back to it while autograd records, and
        under autocast (the fused launch takes one dtype for inputs and weights; the reference
        module autocasts each matmul as the unpatched tracker does)."""
        if torch.is_grad_enabled() and (b.requires_grad or k.requires_grad or v.requires_grad
                                        or any(p.requires_grad for p in self.parameters())):
            return super().forward(b, k, v)
        if autocast_on(b):
            return super().forward(b, k, v)
        check_box_branch_inputs(b, k, v, self.dim, self.heads)
        backend = dispatch.backend_module(self.resolve_backend(b, k, v))
        return backend.box_branch_fwd(b, k, v, _weights(self), (self.norm1.eps, self.norm2.eps))


def make_fused(module: BoxBranch, backend: str) -> FusedBoxBranch:
    """Patch rule: the fused twin of a BoxBranch (weights shared)."""
    return FusedBoxBranch.from_reference(module, backend)


register_swap(BoxBranch, make_fused, name="DeTrack BoxBranch")
