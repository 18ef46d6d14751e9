"""Test helpers: fresh random inputs and error measures against the float64 references."""
from __future__ import annotations

import torch

from fasttrack.ops import reference as R


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64 (NaN anywhere counts as failure: returns inf)."""
    a, b = a.detach().double(), b.detach().double()
    if not torch.isfinite(a).all():
        return float("inf")
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def row_err(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-6) -> float:
    """Worst row's error: max over rows of max_j |a - b| / max_j |b| (a row is the last dim).

    A norm over the whole tensor dilutes errors confined to a few rows: a kernel that gets the
    ragged last query tile of N = 1031 wrong by 20% moves the whole-tensor error by ~1.7%, under
    the bf16 floor. Per row, that tile shows at full size. `floor` bounds the denominator from
    below so that an all-zero reference row (a row with no gradient) compares absolute errors
    instead of dividing by zero. NaN or inf anywhere in `a` returns inf."""
    a, b = a.detach().double(), b.detach().double()
    if not torch.isfinite(a).all():
        return float("inf")
    if a.dim() == 0:
        a, b = a.reshape(1), b.reshape(1)
    err = (a - b).abs().amax(-1)
    return float((err / b.abs().amax(-1).clamp_min(floor)).max())


def close(a: torch.Tensor, b: torch.Tensor, tol: float, atol: float = 1e-5) -> bool:
    """rel_err(a, b) < tol; when the exact answer is zero (dq with a single key: softmax of one
    logit is constant) a relative error is meaningless, so the largest |a| must stay below atol
    (inputs here are O(1), so roundoff sits near 1e-7)."""
    if float(b.detach().double().norm()) < 1e-12:
        return bool(torch.isfinite(a).all()) and float(a.detach().double().abs().max()) < atol
    return rel_err(a, b) < tol


def make_inputs(B, H, Nq, Nk, D, Dv, T, dtype, gen, device="cpu", requires_grad=True):
    """q (B,H,Nq,D), k (B,H,Nk,D), v (B,H,Nk,Dv), cross (B,Nq,T) a row-stochastic map.

    q and k are scaled so that the softmax is neither flat nor one-hot (logits of order 1-3),
    which is where wrong indexing or a wrong max shows up."""
    def rn(*s):
        return torch.randn(*s, generator=gen, dtype=torch.float64)
    q = rn(B, H, Nq, D) * 1.5
    k = rn(B, H, Nk, D)
    v = rn(B, H, Nk, Dv)
    cross = torch.softmax(rn(B, Nq, T) * 2, dim=-1)
    out = [t.to(device=device, dtype=dtype) for t in (q, k, v, cross)]
    if requires_grad:
        for t in out:
            t.requires_grad_(True)
    return out


def grads(outputs, inputs, cotangents):
    """d(sum <out, cot>)/d inputs, keeping None for inputs not reached."""
    outputs = [o for o in outputs]
    return torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True)


def ref64(fn, *tensors, **kw):
    """Run a reference on float64 leaf copies of `tensors`; returns (outputs, leaves)."""
    leaves = [t.detach().double().requires_grad_(True) for t in tensors]
    return fn(*leaves, **kw), leaves


def naive_lowp_probs(q, k, scale):
    """Softmax probabilities computed the plain PyTorch way in the inputs' own dtype: the
    yardstick for the 2x-PyTorch-error rule of DESIGN section 3."""
    return torch.softmax((q @ k.transpose(-1, -2)) * scale, dim=-1)


__all__ = ["close", "rel_err", "row_err", "make_inputs", "grads", "ref64", "naive_lowp_probs", "R"]
