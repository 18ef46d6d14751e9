"""Learnable prompts: where they sit in the text context, the losses, and the Adam loop.

A prompt is P learnable token embeddings (P = 1 in Diff-Tracker) in the text encoder's *output*
space, dimension D (1024 for SD 2.1), i.e. exactly what the UNet's cross-attention layers read.
It is inserted after the start token of the empty prompt's embedding, like a one-word prompt
"<target>" would be: context = [null[0], p_1 .. p_P, null[1 : L - P]] (the end-of-text token
and the padding move right), so the start token keeps absorbing most of the attention and the
prompt tokens' cross maps are the contrast Diff-Tracker learns (with a single free token the
softmax over tokens would be identically 1).

Many targets are many batch rows: prompts (K, P, D) -> contexts (K, L, D), and the losses come
out per target (K,). The loop minimizes their *sum*, so each target's gradient is the one its
own single run would see and, Adam being element-wise, K targets learned together follow K
single runs.

`HostStepAdam` is the optimizer of every Adam loop that runs inside a tracker frame (the prompt
here, DINTR's online fine-tuning): torch.optim.Adam's default update, bit for bit, with the step
count kept on the host. torch's non-capturable Adam reads its tensor step count back with
`.item()` on every parameter at every step (a host sync each), and `capturable=True`, which
keeps it on the device, is refused for CPU tensors.
"""
from __future__ import annotations

from typing import Callable

import torch

from .boxes import normalize_maps

__all__ = ["insert_prompt", "normalized_mse", "learn_prompt", "initial_prompt", "HostStepAdam"]


def insert_prompt(null_context: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """null_context (1, L, D), prompt (K, P, D) -> context (K, L, D) with the prompt tokens at
    positions 1 .. P."""
    if prompt.ndim != 3 or prompt.shape[-1] != null_context.shape[-1]:
        raise ValueError(f"prompt must be (K, P, {null_context.shape[-1]}), got {tuple(prompt.shape)}")
    K, P, _ = prompt.shape
    L = null_context.shape[1]
    if not 1 <= P < L - 1:
        raise ValueError(f"prompt must have 1 to {L - 2} tokens, got {P}")
    null = null_context.to(prompt.dtype).expand(K, -1, -1)
    return torch.cat([null[:, :1], prompt, null[:, 1:L - P]], dim=1)


def initial_prompt(null_context: torch.Tensor, num_targets: int, num_tokens: int = 1,
                   init: torch.Tensor | None = None) -> torch.Tensor:
    """Starting value of the learnable prompt, for every target and token: `init` (1, 1, D) when
    the model provides one (SDComponents.prompt_init: the model's own embedding of a generic
    word such as "object", whose maps already cover objects), else the empty prompt's
    end-of-text embedding (position 1 of the null context), a point the UNet has seen.
    Returns (K, P, D)."""
    start = null_context[:, 1:2] if init is None else init.to(null_context).view(1, 1, -1)
    return start.detach().clone().expand(num_targets, num_tokens, -1).clone()


def normalized_mse(maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Diff-Tracker's attention loss: mean squared error between the min-max normalized map and
    the ground-truth map (1 inside the box). maps, targets: (K, h, w) -> (K,) float32.
    Normalizing makes the loss about *where* the token attends, not how much mass it takes from
    the start token."""
    diff = normalize_maps(maps.float()) - targets.float()
    return diff.pow(2).flatten(1).mean(1)


class HostStepAdam:
    """torch.optim.Adam (no weight decay, no amsgrad) whose step counts are host ints: no host
    read, no upload, on any device.

    The update is torch.optim.Adam's non-capturable one, bit for bit: the moments are stepped
    with the same element-wise ops (as torch's foreach implementation, one aten call per op for
    all parameters) and the bias corrections are the same Python doubles, computed from the host
    count instead of a `.item()` of a device count. As in torch, a parameter whose `grad` is
    None is skipped and keeps its own count. The moments are allocated at a parameter's first
    step.

    Args:
        params: the tensors to optimize (leaves; their `.grad` is read by `step`).
        lr, betas, eps: as torch.optim.Adam.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        if not float(lr) > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        self.lr, self.eps = float(lr), float(eps)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.state: dict[int, list] = {}     # parameter index -> [step count, exp_avg, exp_avg_sq]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (set to None; set_to_none=False zeroes them in place)."""
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_()
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step of every parameter that has a gradient."""
        by_count: dict[int, list[int]] = {}
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            st = self.state.get(i)
            if st is None:
                st = self.state[i] = [0, torch.zeros_like(p, memory_format=torch.preserve_format),
                                      torch.zeros_like(p, memory_format=torch.preserve_format)]
            st[0] += 1
            by_count.setdefault(st[0], []).append(i)
        b1, b2 = self.beta1, self.beta2
        for count, idx in by_count.items():
            params = [self.params[i] for i in idx]
            grads = [p.grad for p in params]
            exp_avgs = [self.state[i][1] for i in idx]
            exp_avg_sqs = [self.state[i][2] for i in idx]
            torch._foreach_lerp_(exp_avgs, grads, 1 - b1)
            torch._foreach_mul_(exp_avg_sqs, b2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - b2)
            # torch.optim.Adam's scalars, from the host count
            step_size = self.lr / (1 - b1 ** count)
            bias_correction2_sqrt = (1 - b2 ** count) ** 0.5
            denom = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denom, bias_correction2_sqrt)
            torch._foreach_add_(denom, self.eps)
            torch._foreach_addcdiv_(params, exp_avgs, denom, -step_size)


def learn_prompt(prompt: torch.Tensor, loss_fn: Callable[[torch.Tensor, int], torch.Tensor], steps: int,
                 lr: float = 5e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on the prompt alone (the diffusion model stays frozen).

    Args:
        prompt: (K, P, D) starting value (not modified).
        loss_fn: (prompt (K, P, D) requiring grad, step index) -> per-target losses (K,).
        steps: number of Adam steps (>= 0).
        lr: learning rate (5e-3 in the paper).
    Returns:
        the learned prompt (K, P, D), detached, and the losses (steps, K) float32, kept on the
        device (reading them back is the caller's choice: no host synchronization here).
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    # Adam's moments live in float32 even for half-precision models: the prompt is tiny.
    # HostStepAdam: torch.optim.Adam's numbers without its per-step host reads.
    p = prompt.detach().float().clone().requires_grad_(True)
    opt = HostStepAdam([p], lr=lr)
    history = []
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            losses = loss_fn(p.to(prompt.dtype), step)
            losses.sum().backward()
        opt.step()
        history.append(losses.detach().float())
    hist = torch.stack(history) if history else prompt.new_zeros((0, prompt.shape[0]), dtype=torch.float32)
    return p.detach().to(prompt.dtype), hist
