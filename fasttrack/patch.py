"""`fasttrack.patch(model)`: swap fused kernels into a model, in place; `unpatch` restores it.

gpt-fast style: a small registry of rules, and one recursive walk over the module tree. A rule
says which modules it takes (`matches`), how to patch one (`apply`, returning whatever is needed
to undo it) and how to undo it (`restore`). Two kinds of rules exist:

- module swaps (`register_swap`): the child module is replaced in its parent by a fused twin
  built from it (weights shared, not copied); `unpatch` puts the original object back;
- in-place rules (`register_rule`): the module stays, something on it changes (a diffusers
  `Attention` gets a fasttrack processor); `unpatch` restores exactly what it had.

Every patched model carries `model._fasttrack_patches`, a list of (parent, name, rule, state)
records. Patching twice changes nothing: a module already patched is skipped, and a fused twin
never matches a rule. Rules are registered by the modules that define fused layers
(`fasttrack.integrations.*`, `fasttrack.trackers.*`), imported lazily through
`_load_builtin_rules` so that `import fasttrack` stays light.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from .ops.dispatch import BACKENDS

__all__ = ["patch", "unpatch", "is_patched", "register_rule", "register_swap", "PatchRule"]

_PATCHES_ATTR = "_fasttrack_patches"
_BACKENDS = ("auto",) + BACKENDS


@dataclass
class PatchRule:
    """One entry of the registry.

    name:    short label, shown in `repr` and errors.
    matches: module -> bool; True when this rule takes the module.
    apply:   (parent, attr_name, module, backend) -> state; patches and returns what `restore`
             needs. For swaps it also sets the fused module on the parent.
    restore: (parent, attr_name, state) -> None; undoes `apply` exactly.
    requires: optional callable raising ImportError (with the extra to install) when the rule
             cannot run here; called only for modules the rule matches.
    """

    name: str
    matches: Callable[[nn.Module], bool]
    apply: Callable[[nn.Module, str, nn.Module, str], Any]
    restore: Callable[[nn.Module, str, Any], None]
    requires: Callable[[], None] | None = None


_RULES: list[PatchRule] = []
# Modules that register rules when imported. Listed here (not imported at import time) so that
# `fasttrack.patch` finds every built-in rule without `import fasttrack` paying for them.
_BUILTIN_RULE_MODULES = [
    "fasttrack.integrations.diffusers_attention",
    "fasttrack.trackers.detrack.fused",
]
_builtins_loaded = False


def register_rule(rule: PatchRule) -> PatchRule:
    """Add an in-place rule to the registry (later rules win over earlier ones)."""
    _RULES.insert(0, rule)
    return rule


def register_swap(cls: type, make_fused: Callable[[nn.Module, str], nn.Module], name: str | None = None) -> PatchRule:
    """Register a module swap: every module of exactly type `cls` is replaced by
    `make_fused(module, backend)`. The fused module must be a different type (so it never
    matches again) and should share the original's parameters."""

    def apply(parent: nn.Module, attr: str, module: nn.Module, backend: str):
        fused = make_fused(module, backend)
        _set_child(parent, attr, fused)
        return module

    def restore(parent: nn.Module, attr: str, original: nn.Module) -> None:
        _set_child(parent, attr, original)

    return register_rule(PatchRule(name or cls.__name__, lambda m: type(m) is cls, apply, restore))


def _set_child(parent: nn.Module, attr: str, child: nn.Module) -> None:
    # nn.Sequential / nn.ModuleList children are named "0", "1", ...: setattr works for both
    # because nn.Module.__setattr__ routes modules into parent._modules.
    setattr(parent, attr, child)


def _load_builtin_rules() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    for mod in _BUILTIN_RULE_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            # Only a missing *fasttrack* module is a packaging bug worth raising; a missing
            # optional dependency (diffusers) is reported later, by the rule that needs it.
            if e.name and e.name.startswith("fasttrack"):
                raise
    _builtins_loaded = True


def _check_backend(backend: str) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")


def patch(model: nn.Module, *, backend: str = "auto") -> nn.Module:
    """Swap fasttrack's fused kernels into `model` in place and return it.

    Every registered rule is applied to every matching submodule (depth first; a module that a
    rule takes is not descended into). Outputs stay within the dtype's tolerance of the
    unpatched model. Patching an already patched model changes nothing; `unpatch` restores it.

    Args:
        model: any nn.Module (a diffusers UNet, a fasttrack tracker, a module containing them).
        backend: "auto", "cuda", "triton" or "torch": which kernels the fused layers call.
    Raises:
        TypeError: `model` is not an nn.Module.
        ValueError: unknown backend.
        ImportError: a matching module needs an optional dependency that is not installed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_backend(backend)
    _load_builtin_rules()
    records = getattr(model, _PATCHES_ATTR, None)
    if records is None:
        records = []
        # object.__setattr__ keeps the list out of nn.Module's attribute routing and state_dict.
        object.__setattr__(model, _PATCHES_ATTR, records)
    # What sits at each patched slot now: the fused twin of a swap, or the module an in-place
    # rule changed. Either way it must not be patched again.
    patched_ids = {id(getattr(parent, name, None)) for parent, name, _, _ in records}

    def visit(parent: nn.Module) -> None:
        for attr, child in list(parent._modules.items()):
            if child is None:
                continue
            rule = next((r for r in _RULES if r.matches(child)), None)
            if rule is None:
                visit(child)
                continue
            if id(child) in patched_ids:
                continue
            if rule.requires is not None:
                rule.requires()
            state = rule.apply(parent, attr, child, backend)
            records.append((parent, attr, rule, state))

    visit(model)
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Undo every `patch` on `model`, in reverse order, restoring the exact original modules
    and processors. A model that was never patched is returned unchanged."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    records = getattr(model, _PATCHES_ATTR, None) or []
    for parent, attr, rule, state in reversed(records):
        rule.restore(parent, attr, state)
    if hasattr(model, _PATCHES_ATTR):
        object.__delattr__(model, _PATCHES_ATTR)
    return model


def is_patched(model: nn.Module) -> bool:
    """True when `patch` has swapped at least one module of `model`."""
    return bool(getattr(model, _PATCHES_ATTR, None))
