"""Trackers by name, for the command line and scripts.

    from fasttrack.trackers.registry import build_tracker, tracker_names
    tracker = build_tracker("detrack")                           # DeTrack.pretrained(), patched
    tracker = build_tracker("detrack", weights="detrack.pt")     # a DeTrack.save() checkpoint
    tracker = build_tracker("dintr", weights="sd-2-1/", patched=False)

Names: "detrack", "diff-tracker", "dintr", "dmtrack", and OpenCV's classical "kcf" and "csrt"
(fasttrack.trackers.classical: baselines, CPU only, no weights; the extra
``fasttrack[classical]``). Without `weights`, every fasttrack tracker is the
tiny model that ships in the package: `DeTrack.pretrained()` and `DMTrack.pretrained()`
(trained on fasttrack's synthetic and photo sequences), `DiffTracker.pretrained()` /
`DINTR.pretrained()` on the shipped tiny-sd diffusion model (trained on synthetic scenes). With `weights`:
DeTrack and DMTrack load a checkpoint file written by their `save` (`from_checkpoint`);
Diff-Tracker and DINTR load a local Stable Diffusion folder in the diffusers layout
(`from_pretrained`; the tracker's own learned parts are read from its subfolder when present).
kcf and csrt take no weights (a ValueError when given).

`patched=True` swaps in fasttrack's fused kernels (`fasttrack.patch(tracker)`, for every
tracker whose entry is `patchable`); `patched=False` gives the plain PyTorch model. The OpenCV
trackers have nothing to patch (`patchable=False`: `patched` changes nothing for them). An entry
with `cpu_only=True` runs on the CPU only: another device is a ValueError, and the commands run
it on the CPU when --device is not given. Tracker modules
are imported only when built, so listing names stays cheap. Errors are ValueErrors naming the
argument (an unknown name lists the choices; a missing or unreadable weights path names it).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Callable

__all__ = ["TRACKERS", "TrackerEntry", "build_tracker", "tracker_names"]


@dataclass(frozen=True)
class TrackerEntry:
    """One registered tracker: a one-line description, what --weights means for it (None: it
    takes no weights), the builder (weights or None, seed, device) -> the plain (unpatched)
    Tracker, whether `fasttrack.patch` applies to it (False: no torch modules, `build_tracker`
    skips the patch) and whether it runs on the CPU only."""

    description: str
    weights: str | None
    build: Callable
    patchable: bool = True
    cpu_only: bool = False


def _first_sentence(exc: BaseException) -> str:
    """The first line / sentence of an exception's message (library errors can be long)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    return text.splitlines()[0].split(". ")[0].rstrip(".")


def _checkpoint_tracker(module: str, cls_name: str):
    """Builder of a tracker that ships trained weights (DeTrack, DMTrack): `pretrained()`
    without weights, else a checkpoint FILE written by its `save`."""
    def build(weights, seed: int, device: str):
        import importlib

        cls = getattr(importlib.import_module(module), cls_name)
        if weights is None:
            tracker = cls.pretrained(device=device)
        else:
            if not os.path.isfile(weights):
                given = "is a folder" if os.path.isdir(weights) else "is not a regular file"
                raise ValueError(f"weights {weights!r} {given}; {cls_name} expects a checkpoint "
                                 f"FILE written by {cls_name}.save (a Stable Diffusion folder "
                                 "goes with --tracker diff-tracker or dintr)")
            try:
                tracker = cls.from_checkpoint(weights, map_location=device)
            except ValueError:  # from_checkpoint's own message (not a checkpoint, old format)
                raise
            except (RuntimeError, OSError, EOFError, KeyError, pickle.UnpicklingError) as exc:
                # what torch.load raises for files that are not torch checkpoints
                raise ValueError(f"weights {weights!r} is not a readable {cls_name} checkpoint "
                                 f"(torch.load: {type(exc).__name__}: {_first_sentence(exc)})") from None
        return tracker.eval()
    return build


def _diffusion(module: str, cls_name: str):
    def build(weights, seed: int, device: str):
        import importlib

        cls = getattr(importlib.import_module(module), cls_name)
        # Diff-Tracker draws its latent noise from `seed`; DINTR is deterministic.
        seeded = {"seed": seed} if "seed" in cls._config_keys else {}
        if weights is None:
            tracker = cls.pretrained(device=device, **seeded)
        else:
            if not os.path.isdir(weights):
                given = "is a file" if os.path.isfile(weights) else "is not a folder"
                raise ValueError(f"weights {weights!r} {given}; {cls_name} expects a FOLDER: a "
                                 "local Stable Diffusion model in the diffusers layout (a DeTrack "
                                 "checkpoint file goes with --tracker detrack)")
            try:
                tracker = cls.from_pretrained(weights, device=device, **seeded)
            except OSError as exc:  # diffusers: missing or broken config / weight files
                raise ValueError(f"weights {weights!r}: cannot load a Stable Diffusion folder "
                                 f"({_first_sentence(exc)})") from None
        return tracker
    return build


def _opencv(kind: str):
    """Builder of OpenCV's `kind` tracker (fasttrack.trackers.classical); weights are refused
    by build_tracker, the seed is unused (OpenCV's trackers are deterministic). OpenCV's own
    thread pool takes torch's thread count (the commands' --threads)."""
    def build(weights, seed: int, device: str):
        import torch

        from .classical import OpenCVTracker, require_cv2

        tracker = OpenCVTracker(kind, device=device)
        require_cv2().setNumThreads(torch.get_num_threads())
        return tracker
    return build


TRACKERS: dict[str, TrackerEntry] = {
    "detrack": TrackerEntry("DeTrack (NeurIPS 2024), in-model latent denoising",
                            "a checkpoint file written by DeTrack.save",
                            _checkpoint_tracker("fasttrack.trackers.detrack", "DeTrack")),
    "diff-tracker": TrackerEntry("Diff-Tracker (ECCV 2024), prompt learning on Stable Diffusion",
                                 "a local Stable Diffusion folder (diffusers layout)",
                                 _diffusion("fasttrack.trackers.diff_tracker", "DiffTracker")),
    "dintr": TrackerEntry("DINTR, diffusion-based interpolation tracker",
                          "a local Stable Diffusion folder (diffusers layout)",
                          _diffusion("fasttrack.trackers.dintr", "DINTR")),
    "dmtrack": TrackerEntry("DMTrack (IJCAI 2024), diffusion mask-driven vision-language tracking",
                            "a checkpoint file written by DMTrack.save",
                            _checkpoint_tracker("fasttrack.trackers.dmtrack", "DMTrack")),
    "kcf": TrackerEntry("KCF (Henriques et al.), OpenCV's kernelized correlation filter, CPU only",
                        None, _opencv("kcf"), patchable=False, cpu_only=True),
    "csrt": TrackerEntry("CSRT (CSR-DCF, Lukezic et al.), OpenCV's channel and spatial "
                         "reliability correlation filter, CPU only",
                         None, _opencv("csrt"), patchable=False, cpu_only=True),
}


def tracker_names() -> list[str]:
    """The registered tracker names, in registration order."""
    return list(TRACKERS)


def build_tracker(name: str, weights=None, *, patched: bool = True, seed: int = 0,
                  device: str = "cpu", precision: str = "fp32"):
    """Build a tracker by name.

    Args:
        name: one of :func:`tracker_names`.
        weights: None for the shipped trained tiny model, else a path (see the module docstring).
        patched: fasttrack's fused kernels (True) or plain PyTorch (False); no effect on an
            entry that is not `patchable` (kcf, csrt).
        seed: Diff-Tracker's noise seed (the other trackers are deterministic).
        device: torch device string ("cpu" only for a `cpu_only` entry).
        precision: "fp32", "tf32", "bf16" or "fp16" (`Tracker.set_precision`; "fp32" only for
            kcf and csrt).
    Returns:
        a :class:`fasttrack.trackers.Tracker`.
    """
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}; choose from {', '.join(TRACKERS)}")
    from .base import PRECISIONS

    entry = TRACKERS[name]
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if weights is not None:
        if not isinstance(weights, (str, os.PathLike)):
            raise TypeError(f"weights must be a path, got {type(weights).__name__}")
        weights = os.fspath(weights)
        if entry.weights is None:
            raise ValueError(f"weights {weights!r}: the {name} tracker takes no weights (it has "
                             "nothing to load); drop --weights")
        if not os.path.exists(weights):
            raise ValueError(f"weights {weights!r}: no such file or folder ({name} expects "
                             f"{entry.weights})")
    tracker = entry.build(weights, int(seed), str(device)).set_precision(precision)
    if patched and entry.patchable:
        import fasttrack

        fasttrack.patch(tracker)
    return tracker
