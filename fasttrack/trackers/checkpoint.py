"""Checkpoints of the trackers that ship trained weights (DeTrack, DMTrack): one file format, one
reader, one checked `load_state_dict`.

A checkpoint is a torch.save'd dict {"format": "<tracker format tag>", "config": the config
dataclass as a dict, "state_dict": tensors on the CPU, "meta": free-form plain data (how the
weights were made, their held-out numbers)}. Run options (config fields that change how a
trained network runs, not its shapes) may be overridden when it is read.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn

__all__ = ["save_checkpoint", "read_checkpoint", "checked_load_state_dict", "load_shipped",
           "build_random"]


def build_random(cls, config, seed: int, device, dtype):
    """cls(config) with random weights from `seed` (tracker.net.reset_parameters): built on the
    meta device (no memory, no throw-away default init), then materialized on `device` and
    initialized once; device="meta" returns it unmaterialized (FLOP counting)."""
    with torch.device("meta"):
        tracker = cls(config)
    if torch.device(device).type == "meta":
        return tracker.to(dtype=dtype)
    tracker.to_empty(device=device)
    tracker.net.reset_parameters(seed)
    return tracker.to(dtype=dtype)


def load_shipped(cls, package: str, filename: str, device, dtype, overrides: dict):
    """`cls.pretrained()`: the weights file `filename` shipped in `package`'s weights/ folder,
    through cls.from_checkpoint(path, map_location=device, **overrides), in `dtype`, eval mode.
    FileNotFoundError saying how to get it back when the file is missing."""
    from importlib import resources

    ref = resources.files(package).joinpath("weights", filename)
    with resources.as_file(ref) as path:
        if not path.is_file():
            model = cls.__name__.lower()
            raise FileNotFoundError(f"the shipped {cls.__name__} weights are missing ({path}); "
                                    f"reinstall fasttrack or train them with `fasttrack train "
                                    f"{model}` (README)")
        tracker = cls.from_checkpoint(path, map_location=device, **overrides)
    return tracker.to(dtype=dtype).eval()


def save_checkpoint(module: nn.Module, config, fmt: str, path, meta: dict | None = None) -> None:
    """Write `module`'s state dict (on the CPU) with its config and format tag to `path`."""
    sd = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    torch.save({"format": fmt, "config": config.to_dict(), "state_dict": sd, "meta": dict(meta or {})}, path)


def read_checkpoint(path, name: str, formats: tuple, run_options: tuple, overrides: dict,
                    map_location="cpu", old_hint: str = "") -> dict:
    """The checkpoint dict at `path`, checked: ValueError naming `path` when it is not a `name`
    checkpoint or has a format not in `formats` (the last is the current one; `old_hint` says
    what to do about older ones), and when `overrides` names anything but `run_options`."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(f"path {str(path)!r} is not a {name} checkpoint (no config / state_dict)")
    if ckpt.get("format") not in formats:
        raise ValueError(f"path {str(path)!r} is a {ckpt.get('format')!r} checkpoint; this "
                         f"fasttrack reads {formats[-1]!r}{old_hint}")
    bad = sorted(set(overrides) - set(run_options))
    if bad:
        raise ValueError(f"cannot override {bad} of a trained {name} (they change its shapes); "
                         f"run options are {list(run_options)}")
    return ckpt


def checked_load_state_dict(module: nn.Module, state_dict, strict: bool, assign: bool, name: str):
    """nn.Module.load_state_dict on `module` that also takes a checkpoint path or a checkpoint
    dict, and whose mismatch error (a ValueError naming `state_dict`) lists every missing key,
    unexpected key and shape mismatch."""
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise TypeError(f"state_dict must be a dict or a checkpoint path, got {type(state_dict).__name__}")
    if "state_dict" in state_dict and "config" in state_dict:
        state_dict = state_dict["state_dict"]
    own = module.state_dict()
    problems = []
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state_dict)
                    if tuple(getattr(state_dict[k], "shape", ())) != tuple(own[k].shape))
    if strict and missing:
        problems.append(f"missing keys {missing}")
    if strict and unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if shapes:
        problems.append(f"shape mismatches {shapes}")
    if problems:
        raise ValueError(f"state_dict does not match this {name}: " + "; ".join(problems))
    return nn.Module.load_state_dict(module, state_dict, strict=strict, assign=assign)
