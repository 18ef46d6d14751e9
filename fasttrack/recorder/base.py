"""What both recorders share: the arguments, their checks, the call count and the harmonized
product (DESIGN 1.1-1.2). `AttentionRecorder` (fused.py) and `EagerRecorder` (eager.py) differ
only in how they obtain and keep the maps."""
from __future__ import annotations

import abc

import torch
import torch.nn as nn

from .layers import SpatialTracker, find_layers, parse_indices, parse_selector
from .resize import as_grid

__all__ = ["Recorder"]


class Recorder(abc.ABC):
    """Base of the recorders: a model containing diffusers Attention layers and what to record.

    Args:
        model: a diffusers UNet or any nn.Module containing diffusers Attention modules.
        resolution: output grid, int R (R x R) or (Rh, Rw); at least every recorded layer's size.
        cross_layers, self_layers: which layers to record: "all", None, int resolutions (a layer's
            longer side), name globs ("up_blocks.3.*"), or a list mixing them.
        tokens: token indices kept from the cross maps (None: all T).
        batch: batch entries kept (None: all), e.g. [1] for the conditional half of a CFG batch.
        renormalize: renormalize every row of each resized self map to sum 1 (DiffSeg).
    Subclasses implement _init_state(), reset(), cross() -> (B', T', Rh, Rw), _self_apply(c, groups)
    and count the calls of each recorded layer in `self._calls`.
    """

    def __init__(self, model: nn.Module, *, resolution=64, cross_layers="all", self_layers=None,
                 tokens=None, batch=None, renormalize=False):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.grid = as_grid(resolution)
        self._layers = find_layers(model)
        if not self._layers:
            raise ValueError(f"{type(model).__name__} contains no diffusers Attention module to record")
        self._sel = {kind: parse_selector(spec, f"{kind}_layers", self._layers, kind)
                     for kind, spec in (("cross", cross_layers), ("self", self_layers))}
        self.tokens = parse_indices(tokens, "tokens")
        self.batch = parse_indices(batch, "batch")
        self.renormalize = bool(renormalize)
        self._spatial = SpatialTracker()   # layer name -> spatial size, learnt from the forwards
        self._calls: dict[str, int] = {}
        self._init_state()
        self.reset()

    def _init_state(self) -> None:
        """Subclasses: set up what the recorder keeps besides the maps (hooks, saved state)."""

    @property
    def num_calls(self) -> int:
        """Forward calls recorded: the most calls any recorded layer has seen."""
        return max(self._calls.values(), default=0)

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget everything recorded so far (selection and settings are kept)."""

    @abc.abstractmethod
    def cross(self) -> torch.Tensor:
        """(B', T', Rh, Rw): head-mean cross maps, resized, averaged over layers and calls."""

    @abc.abstractmethod
    def _self_apply(self, c: torch.Tensor, groups: int = 1) -> torch.Tensor:
        """S_bar^T c: the averaged resized self map applied to maps c (B' / groups, T', Rh, Rw);
        with groups > 1, S_bar is also averaged over the batch groups (`self_cross`)."""

    @staticmethod
    def _group_mean(x: torch.Tensor, groups: int) -> torch.Tensor:
        """(B', ...) holding `groups` consecutive groups of B' / groups rows -> their mean over
        the groups (B' / groups, ...)."""
        if groups == 1:
            return x
        return x.view(groups, x.shape[0] // groups, *x.shape[1:]).mean(0)

    def _grouped_cross(self, groups) -> torch.Tensor:
        """cross() averaged over `groups` batch groups; ValueError for a bad `groups`."""
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"groups must be an int >= 1, got {groups!r}")
        c = self.cross()
        if c.shape[0] % groups:
            raise ValueError(f"groups={groups} does not divide the recorded batch of {c.shape[0]} rows")
        return self._group_mean(c, groups)

    def self_cross(self, normalize: bool = False, groups: int = 1) -> torch.Tensor:
        """(B' / groups, T', Rh, Rw): S_bar^T C_bar, the averaged resized self map applied to
        cross().

        normalize: divide each key pixel j by the attention it receives, (S_bar^T 1)[j], so the
            map becomes the mean of C_bar over the pixels attending to j, weighted by their
            attention. Unnormalized, a pixel many queries attend to collects all their cross
            weight and stands out whatever its own relevance (DESIGN 1.7); the column sums are
            one more value column of the same pass.
        groups: the recorded batch is `groups` consecutive groups of B' / groups rows that
            stand for the same maps seen in separate calls (DINTR: its K targets at its S
            timestep labels in one call, batch S K): S_bar and C_bar are averaged over the groups
            as well as over layers and calls before the product, so the result is the one a
            recording of the groups as separate calls would give (S_bar^T C_bar is not linear
            in the recording: the mean of per-group products would differ).
        """
        return self._self_cross(self._grouped_cross(groups), normalize, groups)

    def _self_cross(self, c: torch.Tensor, normalize: bool, groups: int) -> torch.Tensor:
        if not normalize:
            return self._self_apply(c, groups)
        y = self._self_apply(torch.cat([c, torch.ones_like(c[:, :1])], 1), groups)
        # Every column sum is > 0 (softmax weights are positive); the floor guards underflow.
        return y[:, :-1] / y[:, -1:].clamp_min(torch.finfo(y.dtype).tiny)

    def harmonized(self, alpha: float = 0.5, normalize: bool = False, groups: int = 1) -> torch.Tensor:
        """(B' / groups, T', Rh, Rw): alpha * C_bar + (1 - alpha) * S_bar^T C_bar (Diff-Tracker,
        DESIGN 1.1); normalize and groups as in self_cross."""
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be a float in [0, 1], got {alpha!r}")
        c = self._grouped_cross(groups)
        if alpha == 1.0:   # the cross map alone: no S^T C pass (nor its backward)
            return c
        return alpha * c + (1.0 - alpha) * self._self_cross(c, normalize, groups)
