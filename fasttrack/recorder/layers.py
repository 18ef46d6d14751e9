"""Which attention layers an AttentionRecorder records, and at what spatial size each one runs.

Layers are diffusers `Attention` modules, named by their path in the model
("up_blocks.3.attentions.0.transformer_blocks.0.attn1"). A layer is "cross" when the module was
built with a cross_attention_dim (diffusers' `is_cross_attention`), "self" otherwise.

Selectors (`cross_layers=`, `self_layers=`): "all", None (nothing), an int resolution, a name
glob (fnmatch, `*` also crosses dots: "up_blocks.3.*"), or a list/tuple mixing ints and globs.

Resolution of a layer: its latent grid (h, w). The queries reach a diffusers processor flattened
(B, N, C), so (h, w) is taken from the nearest enclosing module whose input was a 4-D (B, C, h, w)
tensor with h * w = N (a Transformer2DModel in a UNet), which forward pre-hooks note on every
call; failing that a square N is read as (sqrt N, sqrt N). An int selector r matches layers
whose longer side max(h, w) is r, so `self_layers=(64,)` means the 64 x 64 layers of a 512 px SD
image and the 64 x 48 ones of a 512 x 384 image. Resolutions are only known once a layer runs,
so int selectors are checked against the layers seen after the first call (globs at once).
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..integrations.diffusers_attention import is_diffusers_attention

__all__ = ["Layer", "Selector", "find_layers", "parse_selector", "SpatialTracker", "format_hw"]


@dataclass
class Layer:
    """One diffusers Attention module of the model."""

    name: str
    module: nn.Module
    kind: str  # "self" or "cross"
    ancestors: list = field(default_factory=list)  # enclosing modules, nearest first


@dataclass
class Selector:
    """A parsed cross_layers / self_layers argument."""

    everything: bool = False
    resolutions: tuple = ()
    globs: tuple = ()

    @property
    def empty(self) -> bool:
        return not (self.everything or self.resolutions or self.globs)

    def may_match(self, name: str) -> bool:
        """Whether the layer can be recorded at all: a resolution selector needs the layer's
        size, known only when it runs; name globs decide before."""
        return bool(self.resolutions) or self.matches(name, None)

    def matches(self, name: str, hw) -> bool:
        if self.everything or any(fnmatch.fnmatchcase(name, g) for g in self.globs):
            return True
        return hw is not None and max(hw) in self.resolutions


def find_layers(model: nn.Module) -> list[Layer]:
    """Every diffusers Attention module of `model` with its kind and its enclosing modules."""
    layers = []
    path: list[nn.Module] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module._modules.items():
            if child is None:
                continue
            full = f"{prefix}.{name}" if prefix else name
            if is_diffusers_attention(child):
                kind = "cross" if getattr(child, "is_cross_attention", False) else "self"
                layers.append(Layer(full, child, kind, list(reversed(path + [module]))))
                continue
            path.append(module)
            visit(child, full)
            path.pop()

    visit(model, "")
    return layers


def parse_selector(spec, arg: str, layers: list[Layer], kind: str) -> Selector:
    """Parse a layer selector and check its globs against the layers of `kind`.

    Raises TypeError for a malformed selector and ValueError (listing the layer names of that
    kind) for a glob that matches none of them."""
    if spec is None:
        return Selector()
    if isinstance(spec, str) and spec == "all":
        return Selector(everything=True)
    items = [spec] if isinstance(spec, (str, int)) else spec
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{arg} must be 'all', None, an int resolution, a name glob or a list of "
                        f"those, got {type(spec).__name__}")
    res, globs = [], []
    for it in items:
        if isinstance(it, bool) or not isinstance(it, (int, str)):
            raise TypeError(f"{arg} entries must be int resolutions or str name globs, got {it!r}")
        if isinstance(it, int):
            if it <= 0:
                raise ValueError(f"{arg}: resolutions must be positive, got {it}")
            res.append(it)
        else:
            globs.append(it)
    names = [l.name for l in layers if l.kind == kind]
    for g in globs:
        if not any(fnmatch.fnmatchcase(n, g) for n in names):
            raise ValueError(f"{arg}: {g!r} matches no {kind}-attention layer of the model; its "
                             f"{kind}-attention layers are: {', '.join(names) or '(none)'}")
    return Selector(False, tuple(res), tuple(globs))


def format_hw(hw) -> str:
    return f"{hw[0]}x{hw[1]}"


class SpatialTracker:
    """Notes the (h, w) of 4-D inputs entering the modules that enclose attention layers.

    `install(layers)` registers one forward pre-hook per enclosing module; `hw(layer, n, hint)`
    returns the layer's grid for n queries. `remove()` drops the hooks."""

    def __init__(self):
        self._seen: dict[int, tuple[int, int]] = {}
        self._handles = []

    def install(self, layers: list[Layer]) -> None:
        done = set()
        for layer in layers:
            for anc in layer.ancestors:
                if id(anc) not in done:
                    done.add(id(anc))
                    self._handles.append(anc.register_forward_pre_hook(self._note(anc), with_kwargs=True))

    def _note(self, module):
        key = id(module)

        def hook(_mod, args, kwargs):
            x = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
            if isinstance(x, torch.Tensor) and x.dim() == 4:
                self._seen[key] = (int(x.shape[-2]), int(x.shape[-1]))
            else:
                self._seen.pop(key, None)

        return hook

    def hw(self, layer: Layer, n: int, hint=None) -> tuple[int, int]:
        if hint is not None:
            return hint
        for anc in layer.ancestors:
            hw = self._seen.get(id(anc))
            if hw is not None and hw[0] * hw[1] == n:
                return hw
        r = math.isqrt(n)
        if r * r == n:
            return (r, r)
        raise ValueError(f"cannot tell the spatial size of layer {layer.name}: {n} queries, not a "
                         f"square, and no enclosing module received a 4-D (B, C, h, w) input with "
                         f"h * w = {n}")

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._seen.clear()


def parse_indices(spec, arg: str):
    """tokens / batch of a recorder: None, an int, a slice, or a sequence of non-negative ints;
    returns None, a slice or a list (all index a tensor dimension the same way)."""
    if spec is None or isinstance(spec, slice):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = [spec]
    if isinstance(spec, torch.Tensor):
        spec = spec.tolist()
    if not isinstance(spec, (list, tuple)) or not spec:
        raise TypeError(f"{arg} must be None, an int, a slice or a non-empty list of ints, got {spec!r}")
    for i in spec:
        if isinstance(i, bool) or not isinstance(i, int) or i < 0:
            raise ValueError(f"{arg} entries must be non-negative ints, got {i!r}")
    return list(spec)
