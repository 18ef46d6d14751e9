"""Backend selection, xformers style: every backend says why it cannot take an input.

`backend="auto"` tries the backends in order (aten, cuda, triton, torch) and takes the first with
no reasons to refuse; a forced backend ("aten", "cuda", "triton", "torch", or the FASTTRACK_BACKEND
environment variable when the call says "auto") raises `BackendUnavailable` listing its reasons.

The decision is cached per (op, requested backend, FASTTRACK_BACKEND, TRITON_INTERPRET, and each
tensor's device, dtype and shape): a tracker calls the same few shapes thousands of times, and
asking every backend costs tens of microseconds per call. Refusals are not cached (they raise).
The ops' argument checks ride on the same cache (`select(..., validate=)`): they depend on
nothing else, so a shape seen before is neither checked nor dispatched again.
`clear_cache()` empties it (tests that monkeypatch a backend's reasons call it).

The CUDA kernels join "auto" only once they have passed the GPU tests: `VERIFIED_CUDA_OPS` holds
the ops whose CUDA forward ran clean under the GPU test suite and compute-sanitizer (with the run
that showed it recorded in benchmarks/results/). Until then "cuda" must be asked for by name.
Likewise `TRITON_AUTO_EXCLUDED` names the ops whose Triton kernels "auto" skips, with why.

Op families: "lse", "attention", "self_cross", "cross_attention" (fasttrack.ops) and
"box_branch" (DeTrack's fused box branch, tensors (b, k, v); fasttrack.trackers.detrack.fused).
What each backend accepts (dtypes, head dim, tokens, devices) is declared once, in
fasttrack.ops.limits.
"""
from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

import torch

log = logging.getLogger("fasttrack.dispatch")

BACKENDS = ("aten", "cuda", "triton", "torch")
BACKEND_CHOICES = ("auto",) + BACKENDS  # what a `backend=` argument may say
_MODULES = {
    "aten": "fasttrack.ops.aten_backend",
    "cuda": "fasttrack.ops.cuda_backend",
    "triton": "fasttrack.ops.triton_backend",
    "torch": "fasttrack.ops.torch_backend",
}

# CUDA ops "auto" may take. Add an op here only with a committed GPU test run showing it correct
# and faster than Triton. The first run (H200, 2026-12-04, benchmarks/results/gpu-h200-2026-12-04)
# passed every CUDA forward; attention and self_cross were 4-19x slower than Triton there, while
# the cross_attention forward was faster (0.34 / 0.43 / 0.70 ms against 1.21 / 0.91 / 1.04 ms at
# SD-64/96/128): a candidate once a GPU run confirms the dispatch tests with it enabled.
VERIFIED_CUDA_OPS: frozenset[str] = frozenset()

# Devices on which "auto" may take the aten backend (PyTorch's fused kernels with their lse,
# fasttrack.ops.aten_backend). Its CUDA path has not run on a GPU yet: add "cuda" only with a
# committed GPU run of the aten tests (benchmarks/results/).
ATEN_AUTO_DEVICES: frozenset[str] = frozenset({"cpu"})

# Ops whose Triton kernels "auto" does not take, with the reason it reports. Remove an entry only
# with a committed GPU run (benchmarks/results/) showing the kernel correct and faster than the
# torch backend at the sizes the trackers use.
# The attention-family kernels were restructured after their only GPU run (issue 33: unmasked
# full tiles, one-pass five-product backward, aligned self x cross rows, one-launch cross
# attention); that run had shown the old ones correct but slower than PyTorch's path (attention,
# cross_attention). They stay out of "auto" until scripts/gpu_check.sh (its lab step) shows each
# correct and at least as fast on a GPU, with the run committed.
_UNMEASURED = ("the Triton {} kernels have not yet run on a GPU in their current form (ask for "
               "backend='triton'; scripts/gpu_check.sh measures them)")
TRITON_AUTO_EXCLUDED: dict[str, str] = {
    "box_branch": "the Triton box branch (kernels/box_branch.py) was slower than PyTorch on an "
                  "H200 (DeTrack-256: 7.47 against 6.69 ms per frame; ask for backend='triton')",
    **{op: _UNMEASURED.format(op) for op in ("lse", "attention", "self_cross", "cross_attention")},
}


class BackendUnavailable(ValueError):
    """A forced backend cannot take the inputs; the message lists its reasons."""


_LOADED: dict[str, ModuleType] = {}


def backend_module(name: str) -> ModuleType:
    mod = _LOADED.get(name)
    if mod is None:
        mod = _LOADED[name] = importlib.import_module(_MODULES[name])
    return mod


def _module_reasons(name: str, op: str, tensors) -> list[str]:
    try:
        mod = backend_module(name)
    except ImportError as e:  # a backend whose module cannot import refuses everything
        return [f"cannot import {_MODULES[name]}: {e}"]
    return list(mod.reasons(op, *tensors))


def reasons(name: str, op: str, *tensors, auto: bool = False) -> list[str]:
    """Why backend `name` cannot run `op` on `tensors` (empty: it can). A backward op
    ("attention_bwd") asks the same question as its forward: the backends key on op families."""
    op = op.removesuffix("_bwd")
    out = _module_reasons(name, op, tensors)
    if auto and name == "cuda" and op not in VERIFIED_CUDA_OPS:
        out.append(f"the CUDA {op} kernel has not passed the GPU tests yet (ask for backend='cuda')")
    if auto and name == "aten" and not out:
        devs = {t.device.type for t in tensors if isinstance(t, torch.Tensor)}
        if not devs <= ATEN_AUTO_DEVICES:
            out.append(f"the aten backend has not passed the GPU tests on {', '.join(sorted(devs - ATEN_AUTO_DEVICES))} "
                       "yet (ask for backend='aten')")
    if auto and name == "triton" and op in TRITON_AUTO_EXCLUDED:
        out.append(TRITON_AUTO_EXCLUDED[op])
    if auto and name == "triton" and any(getattr(t, "device", None) is not None and t.device.type == "cpu"
                                         for t in tensors):
        # Under TRITON_INTERPRET=1 Triton can run CPU tensors, but the interpreter is a
        # correctness tool, orders of magnitude slower than the torch backend.
        out.append("CPU tensors: the Triton interpreter is for testing (ask for backend='triton')")
    return out


def check_backend(backend, what: str = "backend") -> str:
    """`backend` if it is "auto" or a name of BACKENDS; TypeError / ValueError naming `what`
    otherwise. The one check of backend names (ops, patch, fused modules, FASTTRACK_BACKEND)."""
    if not isinstance(backend, str):
        raise TypeError(f"{what} must be a string, got {type(backend).__name__}")
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"{what} must be one of {BACKEND_CHOICES}, got {backend!r}")
    return backend


# (op, backend, env, interpreter, per tensor (device, dtype, shape)) -> (backend name, how).
_CACHE: dict = {}
_CACHE_MAX = 4096  # shapes a process sees; cleared whole when full (no LRU bookkeeping per call)


def clear_cache() -> None:
    """Forget every cached decision (after changing what a backend's `reasons` says)."""
    _CACHE.clear()


_ENV = getattr(os.environ, "_data", None)
_ENV_KEYS = (b"FASTTRACK_BACKEND", b"TRITON_INTERPRET") if isinstance(_ENV, dict) else None


def select(op: str, backend: str, *tensors, validate=None) -> str:
    """The backend that will run `op`: a name from BACKENDS.

    Raises ValueError for an unknown backend name and BackendUnavailable when the forced
    backend refuses (or, under "auto", when every backend does). Cached (module docstring).
    validate(*tensors), when given, runs on a cache miss before anything else: the argument
    checks are a function of the key too, so a hit skips them (fasttrack.ops passes its own)."""
    if type(backend) is not str:
        check_backend(backend)  # raises TypeError
    # The key, built inline (a helper's frame is a tenth of a cache hit's cost).
    # os.environ.get decodes on every read (~1 us each); its raw bytes mapping does not. Both
    # see every os.environ / monkeypatch.setenv change (putenv without os.environ is not seen).
    if _ENV_KEYS is not None:
        key = [op, backend, _ENV.get(_ENV_KEYS[0]), _ENV.get(_ENV_KEYS[1])]
    else:
        key = [op, backend, os.environ.get("FASTTRACK_BACKEND"), os.environ.get("TRITON_INTERPRET")]
    for t in tensors:  # a plain loop: ~0.5 us less than a comprehension over three tensors
        key.append((t.device, t.dtype, t.shape) if isinstance(t, torch.Tensor) else t)
    key = tuple(key)
    try:
        hit = _CACHE.get(key)
    except TypeError:  # an unhashable non-tensor argument: decide without the cache
        if validate is not None:
            validate(*tensors)
        return _select(op, backend, tensors)[0]
    if hit is None:
        if validate is not None:
            validate(*tensors)
        hit = _select(op, backend, tensors)
        if len(_CACHE) >= _CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = hit
    name, how = hit
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s: %s backend %s", op, how, name)
    return name


def _select(op: str, backend: str, tensors) -> tuple[str, str]:
    """(backend name, "auto chose" or "forced"), or the errors of `select`."""
    check_backend(backend)
    if backend == "auto":
        env = os.environ.get("FASTTRACK_BACKEND", "").strip().lower()
        if env:
            backend = check_backend(env, "FASTTRACK_BACKEND")
    if backend == "auto":
        why = {}
        for name in BACKENDS:
            r = reasons(name, op, *tensors, auto=True)
            if not r:
                return name, "auto chose"
            why[name] = r
        raise BackendUnavailable(_format(op, why))
    r = reasons(backend, op, *tensors)
    if r:
        raise BackendUnavailable(_format(op, {backend: r}))
    return backend, "forced"


def _format(op: str, why: dict[str, list[str]]) -> str:
    lines = [f"no fasttrack backend can run {op} on these inputs:"]
    for name, rs in why.items():
        lines += [f"  {name}: {r}" for r in rs]
    return "\n".join(lines)


def available(op: str, *tensors) -> dict[str, list[str]]:
    """Every backend's reasons for `op` on `tensors`: {name: reasons}, empty lists can run."""
    return {name: reasons(name, op, *tensors) for name in BACKENDS}
