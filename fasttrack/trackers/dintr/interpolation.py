"""DINTR's interpolation process between consecutive frame latents (DINTR paper, section 4.3 and
appendix C), with the offset operator (2d).

The seed's text lost its equations; what follows is the reading that matches its prose, stated
once here and used everywhere in fasttrack:

- The process runs t = S, S-1, ..., 1 (S interpolation steps, the "DDIM steps") from the current
  frame's latent, x_S = z_k ("takes the current frame as the starting point of the noisy
  sample", Eq. 8's base case), to the next frame's, x_0 = z_{k+1}.
- An interpolated sample is a blend of the two known samples (C.14):
      x_t = (1 - a_t) z_{k+1} + a_t z_k,   a_t = t / S.
- Offset operator (2d), C.22-C.26: one step moves by (a_t - a_{t-1}) (z_k - z_{k+1}); the step
  "multiplied by a larger factor" S is the offset o = S (x_t - x_{t-1}) = z_k - z_{k+1}, which
  keeps its magnitude for any S. The interpolation network psi (the UNet's architecture) is
  trained to predict it from (x_t, t, indication) with the single-step loss of Eq. 7,
  ||o - psi(x_t, t, tau)||^2, and the process is
      x_{t-1} = x_t - psi(x_t, t, tau) / S,
  accumulative (C.27): x_0 = z_k - (1/S) sum_t psi(x_t, t, tau), which is z_{k+1} exactly
  when psi returns the true offset.
- "noise is added in the form of an offset" (Alg. 2, L4): no Gaussian noise is drawn; the
  process is deterministic.

At tracking time both anchors are known (the next frame has arrived before the target is
located in it), so the default `offset="anchor"` uses the exact offset o = z_k - z_{k+1} for the
transition and runs the UNet at every interpolated state only for its internal states (the
attention maps). `offset="predicted"` uses the UNet's own output as psi: meaningful for a UNet
fine-tuned with Eq. 7 (`offset_loss`), which DINTR does online on every frame pair
(tracker.py, `finetune_steps`).

The UNet is told the timestep round(a_t * max_timestep): the DDIM-style label of the state's
position along the path (max_timestep = 250, the step bound of the paper's ablation at which
reconstruction becomes exact).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

__all__ = ["OFFSETS", "interpolation_timesteps", "blend", "offset", "interpolate", "offset_loss"]

OFFSETS = ("anchor", "predicted")


def _check_steps(num_steps) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    return num_steps


def interpolation_timesteps(num_steps: int, max_timestep: int = 250) -> list[int]:
    """UNet timestep labels of the states x_S, ..., x_1: round(t / S * max_timestep)."""
    S = _check_steps(num_steps)
    if not isinstance(max_timestep, int) or max_timestep < 1:
        raise ValueError(f"max_timestep must be an int >= 1, got {max_timestep!r}")
    return [int(round(t / S * max_timestep)) for t in range(S, 0, -1)]


def blend(z_cur: torch.Tensor, z_next: torch.Tensor, t: int, num_steps: int) -> torch.Tensor:
    """The interpolated sample x_t = (1 - t/S) z_next + (t/S) z_cur (C.14), any shape."""
    a = t / _check_steps(num_steps)
    return torch.lerp(z_next, z_cur, a)


def offset(z_cur: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
    """The scaled step of operator (2d): o = S (x_t - x_{t-1}) = z_cur - z_next."""
    return z_cur - z_next


def offset_loss(pred: torch.Tensor, z_cur: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
    """Eq. 7, the single-step loss that trains psi: mean ||o - psi||^2 per batch row.
    pred, z_cur, z_next: (B, C, h, w) -> (B,)."""
    return (offset(z_cur, z_next) - pred).pow(2).flatten(1).mean(1)


def interpolate(z_cur: torch.Tensor, z_next: torch.Tensor, num_steps: int,
                step_fn: Callable[[torch.Tensor, int, int], torch.Tensor], *, mode: str = "anchor",
                max_timestep: int = 250) -> Iterator[torch.Tensor]:
    """Run the interpolation process from z_cur towards z_next, calling the network at each state.

    Args:
        z_cur, z_next: (B, C, h, w) latents of frames k and k+1.
        num_steps: S >= 1.
        step_fn: (x_t (B, C, h, w), step index s = S - t, UNet timestep) -> psi(x_t) of the same
            shape (the UNet output; it is where the attention maps get recorded).
        mode: "anchor" (exact offset, the default at tracking time) or "predicted" (psi).
        max_timestep: timestep label of x_S.
    Yields:
        x_{t-1} after each step, ending with x_0 (== z_next in "anchor" mode).
    """
    if mode not in OFFSETS:
        raise ValueError(f"offset must be one of {OFFSETS}, got {mode!r}")
    S = _check_steps(num_steps)
    if z_cur.shape != z_next.shape:
        raise ValueError(f"z_cur and z_next must have the same shape, got {tuple(z_cur.shape)} "
                         f"and {tuple(z_next.shape)}")
    x = z_cur
    for s, ts in enumerate(interpolation_timesteps(S, max_timestep)):
        t = S - s
        psi = step_fn(x, s, ts)
        if mode == "anchor":
            # The accumulative form (C.27) with the exact offset: computing x_{t-1} from the
            # anchors, not by summing S steps, keeps rounding from drifting along the path.
            x = blend(z_cur, z_next, t - 1, S)
        else:
            x = x - psi.to(x.dtype) / S
        yield x
