"""`fasttrack.patch(model)`: swap fused kernels into a model, in place; `unpatch` restores it.

gpt-fast style: a small registry of rules, and one recursive walk over the module tree. A rule
says which modules it takes (`matches`), how to patch one (`apply`, returning whatever is needed
to undo it) and how to undo it (`restore`). Two kinds of rules exist:

- module swaps (`register_swap`): the child module is replaced in its parent by a fused twin
  built from it (weights shared, not copied); `unpatch` puts the original object back;
- in-place rules (`register_rule`): the module stays, something on it changes (a diffusers
  `Attention` gets a fasttrack processor); `unpatch` restores exactly what it had.

What is patched is recorded on the patched slot itself: the module that now sits there (the
fused twin, or the module an in-place rule changed) carries a `_PatchRecord` (parent, name,
rule, state). So the tree tells its own state wherever it is reached from: `is_patched` and
`unpatch` work on the model that was patched, on any module containing it, and on any part of
it. Patching twice changes nothing: a recorded slot is skipped, and a fused twin never matches a
rule.

Trackers: every fasttrack tracker is plain PyTorch until `patch(tracker)`. A tracker that is an
nn.Module (DeTrack) is walked like any module; one that holds its models (DiffTracker, DINTR)
names them with `_patch_roots()`, and patch / unpatch / is_patched act on those.

Rules are registered by the modules that define fused layers (`fasttrack.integrations.*`,
`fasttrack.trackers.*`), imported lazily through `_load_builtin_rules` so that `import fasttrack`
stays light.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from .ops.dispatch import check_backend

__all__ = ["patch", "unpatch", "is_patched", "patched_modules", "register_rule", "register_swap",
           "PatchRule"]

_RECORD_ATTR = "_fasttrack_patch"


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
    "fasttrack.trackers.dmtrack.fused",
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


@dataclass
class _PatchRecord:
    """What sits at a patched slot, stored on the module there: undone by rule.restore(parent,
    name, state)."""

    parent: nn.Module
    name: str
    rule: PatchRule
    state: Any


def _record_of(module: nn.Module) -> _PatchRecord | None:
    return module.__dict__.get(_RECORD_ATTR)


def _roots(obj, what: str) -> list[nn.Module]:
    """The module trees that patch / unpatch / is_patched act on for `obj`."""
    if isinstance(obj, nn.Module):
        return [obj]
    get = getattr(obj, "_patch_roots", None)
    if callable(get):
        roots = list(get())
        if all(isinstance(r, nn.Module) for r in roots):
            return roots
    raise TypeError(f"{what} takes a torch.nn.Module or a fasttrack tracker, got {type(obj).__name__}")


def _patched_slots(root: nn.Module) -> list[tuple[nn.Module, str, nn.Module, _PatchRecord]]:
    """(parent, name, module, record) of every patched slot in root's tree, depth first (a
    patched module's own children are not searched: rules never nest)."""
    out, seen = [], set()

    def visit(parent: nn.Module) -> None:
        if id(parent) in seen:  # a module shared by two parents is visited once
            return
        seen.add(id(parent))
        for name, child in parent._modules.items():
            if child is None:
                continue
            rec = _record_of(child)
            if rec is not None and rec.parent is parent and rec.name == name:
                out.append((parent, name, child, rec))
            else:
                visit(child)

    visit(root)
    return out


def patch(model, *, backend: str = "auto"):
    """Swap fasttrack's fused kernels into `model` in place and return it.

    Every registered rule is applied to every matching submodule (depth first; a module that a
    rule takes is not descended into). Outputs stay within the dtype's tolerance of the
    unpatched model. Patching an already patched model changes nothing (to change the backend,
    `unpatch` first); `unpatch` restores it.

    Args:
        model: any nn.Module (a diffusers UNet, a DeTrack, a module containing them) or a
            fasttrack tracker (DiffTracker, DINTR: their models are patched).
        backend: "auto", "cuda", "triton" or "torch": which kernels the fused layers call.
    Raises:
        TypeError: `model` is neither an nn.Module nor a tracker.
        ValueError: unknown backend.
        ImportError: a matching module needs an optional dependency that is not installed.
    """
    roots = _roots(model, "patch")
    check_backend(backend)
    _load_builtin_rules()

    def visit(parent: nn.Module) -> None:
        for name, child in list(parent._modules.items()):
            if child is None or _record_of(child) is not None:
                continue
            rule = next((r for r in _RULES if r.matches(child)), None)
            if rule is None:
                visit(child)
                continue
            if rule.requires is not None:
                rule.requires()
            state = rule.apply(parent, name, child, backend)
            # The module now at the slot carries the record (in __dict__: not a submodule, not in
            # state_dict, even when `state` holds the original module).
            parent._modules[name].__dict__[_RECORD_ATTR] = _PatchRecord(parent, name, rule, state)

    for root in roots:
        visit(root)
    return model


def unpatch(model):
    """Undo every patch found in `model` (the model that was patched, a module containing it or
    a tracker), restoring the exact original modules and processors. A model without patches is
    returned unchanged."""
    for root in _roots(model, "unpatch"):
        for parent, name, module, rec in reversed(_patched_slots(root)):
            rec.rule.restore(parent, name, rec.state)
            module.__dict__.pop(_RECORD_ATTR, None)
    return model


def is_patched(model) -> bool:
    """True when some module of `model` (an nn.Module or a tracker) is patched."""
    return any(_patched_slots(root) for root in _roots(model, "is_patched"))


def patched_modules(model) -> list[tuple[str, str]]:
    """(qualified name, rule name) of every patched slot of `model`, in module order (for a
    tracker holding several models, names are relative to each model)."""
    out = []
    for root in _roots(model, "patched_modules"):
        names = {id(m): n for n, m in root.named_modules(remove_duplicate=False)}
        for parent, name, _, rec in _patched_slots(root):
            prefix = names.get(id(parent), "")
            out.append((f"{prefix}.{name}" if prefix else name, rec.rule.name))
    return out
