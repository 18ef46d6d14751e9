"""from_pretrained / save_pretrained / tiny for the diffusion trackers.

Layout: the Stable Diffusion components come from a local diffusers folder (sd.load_components);
what a tracker learns or is configured with lives in a subfolder of its own, `<path>/<_folder>/`
("fasttrack_diff_tracker", "fasttrack_dintr"): config.json (the tracker's settings plus any
module configs) and <name>.safetensors per learned module (Diff-Tracker: the prompt updater).
`save_pretrained(path)` writes that subfolder; `from_pretrained(path)` reads it when present
(from `tracker_path` when given, else from `path`), keyword arguments overriding saved settings.
`tiny(seed)` writes a random-weight SD folder and the tracker's subfolder to a temporary folder
and loads both back through from_pretrained: the same code path as real weights.
"""
from __future__ import annotations

import json
import os
import tempfile

import torch

from .sd import load_components, tiny_folder

__all__ = ["SerializationMixin", "write_tracker_folder", "read_tracker_folder"]


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def write_tracker_folder(path, folder: str, settings: dict, modules: dict) -> str:
    """Write config.json ({"tracker": settings, "modules": {name: config}}) and one
    <name>.safetensors per module into `path`/`folder`. modules: name -> nn.Module with a
    `config` dict. Returns the subfolder path."""
    from safetensors.torch import save_file

    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a folder path (str or PathLike), got {type(path).__name__}")
    out = os.path.join(os.fspath(path), folder)
    os.makedirs(out, exist_ok=True)
    cfg = {"tracker": _jsonable(settings),
           "modules": {name: _jsonable(dict(m.config)) for name, m in modules.items()}}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
    for name, m in modules.items():
        state = {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}
        save_file(state, os.path.join(out, f"{name}.safetensors"))
    return out


def read_tracker_folder(path, folder: str) -> tuple[dict, dict, str | None]:
    """Read what write_tracker_folder wrote: (settings, module configs, subfolder path), or
    ({}, {}, None) when `path` has no such subfolder."""
    sub = os.path.join(os.fspath(path), folder)
    cfg_file = os.path.join(sub, "config.json")
    if not os.path.isfile(cfg_file):
        return {}, {}, None
    with open(cfg_file) as f:
        cfg = json.load(f)
    return dict(cfg.get("tracker", {})), dict(cfg.get("modules", {})), sub


def load_module_state(module: torch.nn.Module, sub: str, name: str) -> None:
    """Load `sub`/<name>.safetensors into `module` (strict)."""
    from safetensors.torch import load_file

    module.load_state_dict(load_file(os.path.join(sub, f"{name}.safetensors")), strict=True)


class SerializationMixin:
    """Adds from_pretrained / save_pretrained / tiny to a tracker class.

    The class provides `_folder`, `_config_keys` (settings saved as attributes of the same
    name), `_modules_to_save()` -> {name: module}, `_build(components, settings, module_configs,
    subfolder)` -> tracker, and `_tiny_setup(path, seed)` -> settings that `tiny` writes.
    """

    _folder = "fasttrack_tracker"
    _config_keys: tuple = ()

    def _modules_to_save(self) -> dict:
        return {}

    @classmethod
    def _build(cls, components, settings: dict, module_configs: dict, sub):
        return cls(components, **settings)

    @classmethod
    def _tiny_setup(cls, path: str, seed: int) -> None:
        """Write the tracker subfolder of a tiny model (default: nothing to write)."""

    @classmethod
    def from_pretrained(cls, path, *, tracker_path=None, device="cpu", dtype=torch.float32,
                        image_size: int | None = None, **settings):
        """Load from a local Stable Diffusion folder in the diffusers layout (never the network).

        Args:
            path: the SD folder (vae/, unet/, scheduler/, text_encoder/ or null_context.safetensors).
            tracker_path: folder holding what save_pretrained wrote (default: `path`).
            device, dtype: where and in what precision the model runs.
            image_size: square input size (default: UNet sample_size x VAE factor).
            **settings: tracker settings, overriding saved ones (see the class docstring).
        """
        components = load_components(path, device=device, dtype=dtype, image_size=image_size)
        saved, module_cfgs, sub = read_tracker_folder(tracker_path if tracker_path is not None else path,
                                                      cls._folder)
        return cls._build(components, {**saved, **settings}, module_cfgs, sub)

    def save_pretrained(self, path) -> str:
        """Write the tracker's settings and learned modules to `path`/<_folder>/; returns it."""
        settings = {k: getattr(self, k) for k in self._config_keys}
        return write_tracker_folder(path, self._folder, settings, self._modules_to_save())

    @classmethod
    def tiny(cls, seed: int = 0, *, device="cpu", dtype=torch.float32, **settings):
        """A small random-weight tracker (128 px input, 16 x 16 latents, prompt dim 32) for
        tests and demos, written to a temporary folder and loaded back with from_pretrained."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        with tempfile.TemporaryDirectory(prefix="fasttrack-tiny-") as tmp:
            with torch.random.fork_rng(devices=[]):
                tiny_folder(tmp, seed)
                cls._tiny_setup(tmp, seed)
            return cls.from_pretrained(tmp, device=device, dtype=dtype, **settings)
