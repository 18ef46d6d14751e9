"""Initialise a DeTrack network from an MAE / timm ViT checkpoint (e.g. MAE's released
mae_pretrain_vit_base.pth for DeTrack256 / DeTrack384 training).

    report = load_vit_weights(tracker.net, "mae_pretrain_vit_base.pth")

Key mapping (checkpoint -> DeTrackNet; C = width, P = patch, G = checkpoint grid side):

    patch_embed.proj.weight (C, 3, P, P), .bias (C,)  -> patch_embed.weight, .bias
    pos_embed (1, 1 + G*G, C) or (1, G*G, C)          -> pos_z (1, (template_size/P)^2, C),
                                                          pos_x (1, (search_size/P)^2, C)
    blocks.{i}.norm1.*, norm2.*                        -> blocks.{i}.vis.norm1.*, norm2.*
    blocks.{i}.attn.qkv.weight (3C, C), .bias (3C,)    -> blocks.{i}.vis.qkv.*
      (or attn.q_bias, attn.v_bias (C,): qkv bias = [q_bias, 0, v_bias], BEiT style)
    blocks.{i}.attn.proj.*                             -> blocks.{i}.vis.proj.*
    blocks.{i}.mlp.fc1.*, mlp.fc2.*                    -> blocks.{i}.vis.fc1.*, fc2.*

The position grid (cls entry dropped) is resized bicubically with align_corners=False and no
antialiasing, as OSTrack's fine-tuning does (timm's resample_abs_pos_embed antialiases when it
shrinks a grid; the two differ only there). cls_token, norm.*, head.*, the MAE decoder
(decoder_*, mask_token) and blocks past cfg.depth are reported as skipped; box branches, box
embedding, refiner, mapping, slot_embed and box_noise are left as they are. Everything is
checked before anything is written, so an error leaves the network untouched. The number of
heads is not stored in a checkpoint: the caller's config must match the checkpoint's (12 for
ViT-B, the DeTrackConfig default).
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ..trackers.detrack.model import DeTrackNet

__all__ = ["load_vit_weights"]

_WRAPPERS = ("model", "state_dict", "module")
_PREFIXES = ("module.", "encoder.", "backbone.")
# checkpoint block sub-key -> VisualBlock sub-key
_BLOCK_MAP = {f"{a}.{p}": f"{b}.{p}" for a, b in
              (("norm1", "norm1"), ("attn.qkv", "qkv"), ("attn.proj", "proj"),
               ("norm2", "norm2"), ("mlp.fc1", "fc1"), ("mlp.fc2", "fc2"))
              for p in ("weight", "bias")}
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")


def _read(source) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """source -> ({stripped key: tensor}, {stripped key: original key}, [non-tensor keys])."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"source: no such checkpoint file: {os.fspath(source)!r}")
        try:
            source = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError, RuntimeError (not a zip / pickle), ...
            raise ValueError(f"source: {os.fspath(source)!r} could not be read by torch.load("
                             f"weights_only=True) ({type(e).__name__}: {e}); if it pickles other "
                             f"objects, load it yourself and pass the state dict") from e
    if not isinstance(source, Mapping):
        raise TypeError(f"source must be a checkpoint path or a state dict, got "
                        f"{type(source).__name__}")
    while not any(isinstance(v, torch.Tensor) for v in source.values()):
        inner = next((source[w] for w in _WRAPPERS if isinstance(source.get(w), Mapping)), None)
        if inner is None:
            raise ValueError(f"source holds no tensors (keys {sorted(map(str, source))[:8]}); "
                             f"expected a state dict or one wrapped in {list(_WRAPPERS)}")
        source = inner
    sd, orig, other = {}, {}, []
    for key, value in source.items():
        if not isinstance(value, torch.Tensor):
            other.append(str(key))
            continue
        k = str(key)
        while k.startswith(_PREFIXES):
            k = k.split(".", 1)[1]
        if k in sd:
            raise ValueError(f"source: keys {orig[k]!r} and {key!r} both map to {k!r}")
        sd[k], orig[k] = value, str(key)
    return sd, orig, other


def _resize_grid(pos: torch.Tensor, side: int) -> torch.Tensor:
    """(1, G*G, C) row-major grid -> (1, side*side, C), bicubic, align_corners=False."""
    G, C = math.isqrt(pos.shape[1]), pos.shape[2]
    if G == side:
        return pos
    grid = pos.float().reshape(1, G, G, C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


def load_vit_weights(net: DeTrackNet, source, *, strict_blocks: bool = True) -> dict:
    """Copy the ViT part of an MAE / timm checkpoint into `net` (mapping: module docstring).

    Args:
        net: the DeTrackNet (tracker.net), any device / dtype.
        source: a checkpoint path (read with torch.load(weights_only=True) onto the CPU) or a
            state dict, possibly wrapped as {"model": sd} (MAE), {"state_dict": sd} or
            {"module": sd}, keys possibly prefixed "module.", "encoder." or "backbone.".
        strict_blocks: if the checkpoint has fewer blocks than cfg.depth, raise (True) or leave
            the extra blocks at their init (False). Extra checkpoint blocks are always skipped.
    Returns:
        {"loaded": net parameter names set, "skipped": checkpoint keys not used, "missing":
        names of patch_embed / pos_z / pos_x / blocks.{i}.vis parameters the checkpoint lacks}.
    Raises:
        TypeError: net is not a DeTrackNet, or source is neither a path nor a mapping.
        ValueError: unreadable file, patch size or width (tensor shape) mismatch, missing blocks
            with strict_blocks, or block tensors the DeTrack block has no place for (layer
            scale, qk-norm, relative position bias: the block would compute something else).
    """
    if not isinstance(net, DeTrackNet):
        raise TypeError(f"net must be a DeTrackNet (tracker.net), got {type(net).__name__}")
    cfg = net.cfg
    sd, orig, other = _read(source)
    params = dict(net.named_parameters())
    plan: dict[str, torch.Tensor] = {}          # net param name -> tensor to copy
    used: set[str] = set()

    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.dim() == 4 and tuple(w.shape[2:]) != (cfg.patch,) * 2:
        raise ValueError(f"source: patch size mismatch: checkpoint patch_embed.proj.weight has "
                         f"{tuple(w.shape[2:])} patches, net has patch {cfg.patch}")
    for ck, name in (("patch_embed.proj.weight", "patch_embed.weight"),
                     ("patch_embed.proj.bias", "patch_embed.bias")):
        if ck in sd:
            plan[name] = sd[ck]
            used.add(ck)

    if "pos_embed" in sd:
        pos = sd["pos_embed"]
        n = pos.shape[1] if pos.dim() == 3 else 0
        prefix = 0 if math.isqrt(n) ** 2 == n else 1
        if pos.dim() != 3 or pos.shape[0] != 1 or n <= prefix \
                or math.isqrt(n - prefix) ** 2 != n - prefix:
            raise ValueError(f"source: pos_embed of shape {tuple(pos.shape)} is not "
                             f"(1, [1 +] G*G, C)")
        if pos.shape[2] != cfg.dim:
            raise ValueError(f"source: width mismatch: pos_embed {tuple(pos.shape)} vs net.pos_x "
                             f"{tuple(net.pos_x.shape)}")
        grid = pos[:, prefix:]
        plan["pos_z"] = _resize_grid(grid, cfg.template_size // cfg.patch)
        plan["pos_x"] = _resize_grid(grid, cfg.search_size // cfg.patch)
        used.add("pos_embed")

    present: set[int] = set()
    unknown = []
    for key in sd:
        m = _BLOCK_KEY.fullmatch(key)
        if not m:
            continue
        i, sub = int(m.group(1)), m.group(2)
        present.add(i)
        if i >= cfg.depth:
            continue
        if sub in _BLOCK_MAP:
            plan[f"blocks.{i}.vis.{_BLOCK_MAP[sub]}"] = sd[key]
            used.add(key)
        elif sub in ("attn.q_bias", "attn.v_bias"):
            qb, vb = sd.get(f"blocks.{i}.attn.q_bias"), sd.get(f"blocks.{i}.attn.v_bias")
            if f"blocks.{i}.attn.qkv.bias" not in sd and qb is not None and vb is not None:
                bias = torch.cat([qb, torch.zeros_like(qb), vb])
                plan[f"blocks.{i}.vis.qkv.bias"] = bias
                used.add(key)
        else:
            unknown.append(orig[key])
    if unknown:
        raise ValueError(f"source: block tensors with no counterpart in the DeTrack block "
                         f"(it would compute a different function): {sorted(unknown)}")
    if not plan:
        raise ValueError(f"source has no ViT keys (patch_embed.*, pos_embed, blocks.*); first "
                         f"keys: {sorted(orig.values())[:8]}")
    absent = [i for i in range(cfg.depth) if i not in present]
    if absent and strict_blocks:
        raise ValueError(f"source has {len(present)} blocks, net has depth {cfg.depth}: blocks "
                         f"{absent} missing (strict_blocks=False keeps them at their init)")

    for name, t in plan.items():
        p = params[name]
        if t.shape != p.shape:
            raise ValueError(f"source: width / shape mismatch for net.{name}: checkpoint "
                             f"{tuple(t.shape)}, net {tuple(p.shape)}")
    with torch.no_grad():
        for name, t in plan.items():
            params[name].copy_(t.to(device=params[name].device, dtype=params[name].dtype))

    vis = [n for n in params if n.startswith(("patch_embed.", "pos_z", "pos_x"))
           or re.fullmatch(r"blocks\.\d+\.vis\..+", n)]
    return {"loaded": [n for n in params if n in plan],
            "skipped": sorted(other + [orig[k] for k in sd if k not in used]),
            "missing": [n for n in vis if n not in plan]}
