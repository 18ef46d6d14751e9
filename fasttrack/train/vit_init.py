"""Initialise a DeTrack or DMTrack network from the public ViT checkpoints the papers start from:
MAE's mae_pretrain_vit_base.pth (or any timm ViT), and OSTrack's tracking checkpoints
(vitb_256_mae_ce_32x4_ep300/OSTrack_ep0300.pth.tar, vitb_384_mae_ce_32x4_ep300/...).

    tracker = DeTrack.detrack256()              # or DeTrack.detrack384(), DMTrack.dmtrack256()
    report = load_vit_weights(tracker.net, "OSTrack_ep0300.pth.tar")
    report["format"]                            # "ostrack" or "mae", detected from the keys

or, in training, `fasttrack train detrack|dmtrack --config ... --init-vit PATH`.

Layouts (C = width, P = patch, D = the net's depth; a file may wrap the state dict in "net",
"model", "state_dict" or "module", and prefix its keys "module.", "encoder." or "backbone."):

    "mae"     MAE / timm ViT: {"model": {patch_embed.proj.*, cls_token, pos_embed, blocks.*, norm.*}}
              (mae_pretrain_vit_base.pth; a timm ViT adds head.*, the MAE visualize file
              decoder_* and mask_token).
    "ostrack" OSTrack: {"net": {backbone.<the MAE keys>, backbone.pos_embed_z,
              backbone.pos_embed_x, box_head.*}, "epoch", "optimizer", "settings", ...}. Its
              backbone keeps the MAE pos_embed it was fine-tuned from next to the two grids.

Key mapping (checkpoint key without its prefix -> network parameter; DeTrackNet's ViT block of
layer i is `blocks.{i}.vis`, DMTrackNet's is `blocks.{i}`, written <blk> below):

    patch_embed.proj.weight (C, 3, P, P), .bias (C,)  -> patch_embed.weight, .bias
    mae:     pos_embed (1, k + G*G, C), its k = 0, 1   -> pos_z (1, (template_size/P)^2, C),
             or 2 leading cls / dist entries dropped       pos_x (1, (search_size/P)^2, C)
    ostrack: pos_embed_z (1, Gz*Gz, C)                  -> pos_z
             pos_embed_x (1, Gx*Gx, C)                  -> pos_x
             (+ template_segment_pos_embed / search_segment_pos_embed (1, 1, C), when the
             checkpoint has them, added to pos_z / pos_x: OSTrack adds them to every token)
    blocks.{i}.norm1.*, norm2.*                        -> <blk>.norm1.*, norm2.*
    blocks.{i}.attn.qkv.weight (3C, C), .bias (3C,)    -> <blk>.qkv.*
      (or attn.q_bias, attn.v_bias (C,): qkv bias = [q_bias, 0, v_bias], BEiT style)
    blocks.{i}.attn.proj.*                             -> <blk>.proj.*
    blocks.{i}.mlp.fc1.* (4C, C), mlp.fc2.* (C, 4C)    -> <blk>.fc1.*, fc2.*
    norm.weight, norm.bias (C,)                        -> DMTrackNet: norm.* (the final LayerNorm
                                                          before the text cross-attention);
                                                          DeTrackNet: skipped (no final norm)

A grid whose side differs from the net's (an MAE 14 x 14 grid; an OSTrack-256 file in
DeTrack384) is resized bicubically with align_corners=False and no antialiasing, as OSTrack's
fine-tuning does (timm's resample_abs_pos_embed antialiases when it shrinks a grid; the two
differ only there); a grid of the right side is copied as it is.

Reported as skipped, never loaded: cls_token, dist_token, the MAE pos_embed of an OSTrack file,
head.*, fc_norm.*, the MAE decoder (decoder_*, mask_token), everything else outside the ViT,
and OSTrack's box_head.*. OSTrack's head is a CenterPredictor: three towers (centre score,
offset, size) of four Conv3x3-BatchNorm-ReLU layers, C -> 256 -> 128 -> 64 -> 32, and a 1x1
conv each. Neither DeTrack's bin decoder nor fasttrack's centre head (center_head.py: one
LayerNorm, two C -> C 3x3 convs, one 1x1 conv to 5 maps, a query term and an IoU branch) nor
DMTrack's (the same CenterHead) has those tensors, so the head starts from its own init. Left
as they are: DeTrack's box branches, box embedding, refiner, mapping, slot_embed, box_noise;
DMTrack's text encoder, cross-attention, mask module and head.

Checks, all made before anything is written (an error leaves the network untouched), each
raising one ValueError line that names the keys (the first few and a count) and the expected
layout: the patch size; the position grids square; patch_embed.proj.*, the position keys,
(DMTrackNet) norm.* and every key of blocks 0 .. D-1 present (a block's attn.qkv missing is an
error; a checkpoint with fewer blocks than D raises unless strict_blocks=False, which keeps the
missing blocks at their init); no blocks past D (raises unless strict_blocks=False, which skips
them); no block tensor the block has no place for (layer scale, qk-norm, relative position
bias: the block would compute something else); every tensor's shape equal to its target's
(width, MLP ratio). The number of heads is not stored in a
checkpoint: the caller's config must match the checkpoint's (12 for ViT-B, the default of both
configs).

Files: read with torch.load(weights_only=True). OSTrack's trainer pickles its training state
next to the weights ("settings", "stats": objects of OSTrack's own lib.train classes), which
weights_only refuses and a plain torch.load cannot import without OSTrack's code. Such a file is
read again with an unpickler that builds only what torch's weights_only loader allows (tensors,
storages, dtypes, plain containers) and turns every other pickled class or function into an
inert placeholder that runs none of its code; the names replaced are listed in the report
("opaque").
"""
from __future__ import annotations

import _compat_pickle
import math
import os
import pickle
import re
import types
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from ..trackers.detrack.model import DeTrackNet
from ..trackers.dmtrack.model import DMTrackNet

__all__ = ["load_vit_weights", "FORMATS"]

FORMATS = ("mae", "ostrack")
_WRAPPERS = ("net", "model", "state_dict", "module")
_PREFIXES = ("module.", "encoder.", "backbone.")
_SUBS = ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2")
# checkpoint block sub-key -> VisualBlock sub-key
_BLOCK_MAP = {f"{a}.{p}": f"{a.split('.')[-1]}.{p}" for a in _SUBS for p in ("weight", "bias")}
_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")
_SHOW = 5           # keys named in an error message


# ------------------------------------------------------------------------------ reading files
class _Opaque:
    """Placeholder for a pickled object whose class torch's weights_only loader does not allow:
    takes any arguments, state, items and appends, keeps none of them, runs no foreign code."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def __repr__(self):
        return f"<opaque {self._pickled_as}>"


def _opaque_pickle_module(replaced: set) -> types.ModuleType:
    """A pickle module for torch.load(pickle_module=...) whose Unpickler resolves a global only
    from torch's weights_only allowlist and replaces every other one with an _Opaque subclass
    (named in `replaced`); nothing is imported."""
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = _get_allowed_globals()
    stubs: dict[str, type] = {}

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            # torch.save writes protocol 2, whose writer renames Python 3 modules to Python 2's
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            full = f"{module}.{name}"
            if full in allowed:
                return allowed[full]
            if full not in stubs:
                stubs[full] = type(name, (_Opaque,), {"_pickled_as": full, "__module__": __name__})
                replaced.add(full)
            return stubs[full]

    mod = types.ModuleType("fasttrack_opaque_pickle")
    mod.Unpickler = Unpickler
    mod.load = lambda f, **kw: Unpickler(f, **kw).load()
    return mod


def _torch_load(path) -> tuple[object, list[str]]:
    """torch.load of a checkpoint file, weights_only, else with opaque placeholders (module
    docstring) -> (object, sorted names replaced)."""
    name = os.fspath(path)
    try:
        return torch.load(name, map_location="cpu", weights_only=True), []
    except pickle.UnpicklingError as e:       # a pickled global outside the allowlist (or junk)
        first = e
    except Exception as e:                    # RuntimeError (not a zip / pickle), EOFError, ...
        raise ValueError(f"source: {name!r} is not a checkpoint torch.load can read "
                         f"({type(e).__name__}: {' '.join(str(e).split())[:300]})") from e
    replaced: set[str] = set()
    try:
        obj = torch.load(name, map_location="cpu", weights_only=False,
                         pickle_module=_opaque_pickle_module(replaced))
    except Exception as e:
        raise ValueError(f"source: {name!r} could not be read by torch.load, neither "
                         f"weights_only ({' '.join(str(first).split())[:200]}) nor with inert "
                         f"placeholders for its pickled objects ({type(e).__name__}: "
                         f"{' '.join(str(e).split())[:200]})") from e
    return obj, sorted(replaced)


def _read(source) -> tuple[dict, dict, list, list]:
    """source -> ({stripped key: tensor}, {stripped key: original key}, [non-tensor keys],
    [globals replaced by placeholders])."""
    opaque: list[str] = []
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"source: no such checkpoint file: {os.fspath(source)!r}")
        source, opaque = _torch_load(source)
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
    return sd, orig, other, opaque


# ------------------------------------------------------------------------------ helpers
def _resize_grid(pos: torch.Tensor, side: int) -> torch.Tensor:
    """(1, G*G, C) row-major grid -> (1, side*side, C), bicubic, align_corners=False."""
    G, C = math.isqrt(pos.shape[1]), pos.shape[2]
    if G == side:
        return pos
    grid = pos.float().reshape(1, G, G, C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


def _is_grid(t: torch.Tensor, lead: int = 0) -> bool:
    """t is (1, lead + G*G, C) with G >= 1."""
    if t.dim() != 3 or t.shape[0] != 1 or t.shape[1] <= lead:
        return False
    n = t.shape[1] - lead
    return math.isqrt(n) ** 2 == n


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return f"{shown}, ... ({len(names) - _SHOW} more)" if len(names) > _SHOW else shown


def _ranges(idx) -> str:
    idx = sorted(idx)
    parts, start = [], None
    for a, b in zip(idx, idx[1:] + [None]):
        start = a if start is None else start
        if b != a + 1:
            parts.append(str(a) if a == start else f"{start}-{a}")
            start = None
    return ", ".join(parts)


def _layout(fmt: str, depth: int) -> str:
    blocks = (f"blocks.{{0..{depth - 1}}}.{{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}}"
              f".{{weight,bias}}")
    if fmt == "ostrack":
        return ("the OSTrack layout {'net': {backbone.patch_embed.proj.weight/bias, "
                f"backbone.pos_embed_z, backbone.pos_embed_x, backbone.{blocks}, backbone.norm.*, "
                "box_head.*}}")
    return (f"the MAE / timm ViT layout {{'model': {{patch_embed.proj.weight/bias, pos_embed, "
            f"{blocks}, norm.*}}}}")


def _detect(sd: dict) -> str | None:
    if "pos_embed_z" in sd or "pos_embed_x" in sd or any(k.startswith("box_head.") for k in sd):
        return "ostrack"
    if "patch_embed.proj.weight" in sd or "pos_embed" in sd or any(map(_BLOCK_KEY.fullmatch, sd)):
        return "mae"
    return None


def _block_prefix(net) -> str:
    return "blocks.{}.vis." if isinstance(net, DeTrackNet) else "blocks.{}."


# ------------------------------------------------------------------------------ the loader
def load_vit_weights(net: DeTrackNet | DMTrackNet, source, *, strict_blocks: bool = True) -> dict:
    """Copy the ViT part of an MAE / timm or OSTrack checkpoint into `net` (layouts and key
    mapping: module docstring).

    Args:
        net: a DeTrackNet or DMTrackNet (tracker.net), any device / dtype (the meta device
            checks keys and shapes without data).
        source: a checkpoint path or a state dict, wrapped or not (module docstring).
        strict_blocks: raise (True) when the checkpoint has fewer or more blocks than the net's
            depth, or (False) keep the missing blocks at their init and skip the extra ones.
    Returns:
        {"format": "mae" or "ostrack", "loaded": net parameter names set, "skipped": checkpoint
        keys not used (their names in the file), "missing": ViT parameters of the net left at
        their init (blocks missing with strict_blocks=False), "opaque": pickled globals of the
        file replaced by placeholders}.
    Raises:
        TypeError: net is neither network, or source is neither a path nor a mapping.
        FileNotFoundError: no such file.
        ValueError: unreadable file; neither layout; patch size mismatch; missing, unexpected
            or wrongly shaped keys (one line naming them and the expected layout).
    """
    if not isinstance(net, (DeTrackNet, DMTrackNet)):
        raise TypeError(f"net must be a DeTrackNet or DMTrackNet (tracker.net), got "
                        f"{type(net).__name__}")
    cfg = net.cfg
    sd, orig, other, opaque = _read(source)
    fmt = _detect(sd)
    if fmt is None:
        raise ValueError(f"source has no ViT keys (patch_embed.*, pos_embed*, blocks.*): it is "
                         f"neither layout; first keys: {sorted(orig.values())[:8]} "
                         f"({len(orig)} tensors); expected {_layout('ostrack', cfg.depth)} or "
                         f"{_layout('mae', cfg.depth)}")
    # the prefix of the file's ViT keys, to name the keys it lacks as the file would
    vit = [k for k in ("patch_embed.proj.weight", "pos_embed", "pos_embed_x") if k in sd]
    vit += [k for k in sd if _BLOCK_KEY.fullmatch(k)][:1]
    pre = orig[vit[0]][:-len(vit[0])] if vit else ("backbone." if fmt == "ostrack" else "")
    layout = _layout(fmt, cfg.depth)
    params = dict(net.named_parameters())

    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.dim() == 4 and tuple(w.shape[2:]) != (cfg.patch,) * 2:
        raise ValueError(f"source ({fmt} layout): patch size mismatch: checkpoint "
                         f"{orig['patch_embed.proj.weight']} has {tuple(w.shape[2:])} patches, "
                         f"net has patch {cfg.patch}")

    plan: dict[str, torch.Tensor] = {}          # net param name -> tensor to copy
    src: dict[str, str] = {}                    # net param name -> checkpoint key it comes from
    used: set[str] = set()
    missing: list[str] = []                     # checkpoint keys (file names) the layout needs
    malformed: list[str] = []

    def take(ck: str, name: str, value: torch.Tensor | None = None):
        plan[name], src[name] = (sd[ck] if value is None else value), ck
        used.add(ck)

    for ck, name in (("patch_embed.proj.weight", "patch_embed.weight"),
                     ("patch_embed.proj.bias", "patch_embed.bias")):
        take(ck, name) if ck in sd else missing.append(pre + ck)

    sides = {"pos_z": cfg.template_size // cfg.patch, "pos_x": cfg.search_size // cfg.patch}
    if fmt == "ostrack":
        for ck, name, seg in (("pos_embed_z", "pos_z", "template_segment_pos_embed"),
                              ("pos_embed_x", "pos_x", "search_segment_pos_embed")):
            if ck not in sd:
                missing.append(pre + ck)
            elif not _is_grid(sd[ck]):
                malformed.append(f"{orig[ck]} {tuple(sd[ck].shape)} is not (1, G*G, C)")
            else:
                take(ck, name, _resize_grid(sd[ck], sides[name]))
                if seg in sd and sd[seg].shape == (1, 1, sd[ck].shape[2]):
                    plan[name] = plan[name] + sd[seg].to(plan[name].dtype)
                    used.add(seg)
    elif "pos_embed" not in sd:
        missing.append(pre + "pos_embed")
    else:
        pos = sd["pos_embed"]
        n = pos.shape[1] if pos.dim() == 3 else 0
        lead = n - math.isqrt(n) ** 2
        if lead > 2 or not _is_grid(pos, lead):
            malformed.append(f"{orig['pos_embed']} {tuple(pos.shape)} is not (1, [1 or 2 +] "
                             f"G*G, C)")
        else:
            for name, side in sides.items():
                take("pos_embed", name, _resize_grid(pos[:, lead:], side))

    blk = _block_prefix(net)
    present: dict[int, list[str]] = {}
    for key in sd:
        m = _BLOCK_KEY.fullmatch(key)
        if m:
            present.setdefault(int(m.group(1)), []).append(key)
    extra = sorted(i for i in present if i >= cfg.depth)
    absent = [i for i in range(cfg.depth) if i not in present]
    foreign = [orig[k] for i in sorted(present) if i < cfg.depth for k in present[i]
               if k.split(".", 2)[2] not in _BLOCK_MAP
               and k.split(".", 2)[2] not in ("attn.q_bias", "attn.v_bias")]
    beyond = [orig[k] for i in extra for k in present[i]] if strict_blocks else []
    for i in sorted(i for i in present if i < cfg.depth):
        b = f"blocks.{i}."
        for sub, target in _BLOCK_MAP.items():
            if b + sub in sd:
                take(b + sub, blk.format(i) + target)
            elif sub == "attn.qkv.bias" and b + "attn.q_bias" in sd and b + "attn.v_bias" in sd:
                qb, vb = sd[b + "attn.q_bias"], sd[b + "attn.v_bias"]
                take(b + "attn.q_bias", blk.format(i) + target,
                     torch.cat([qb, torch.zeros_like(qb), vb]))
                used.add(b + "attn.v_bias")
            else:
                missing.append(pre + b + sub)
    if absent and strict_blocks:
        missing += [pre + f"blocks.{i}.{sub}" for i in absent for sub in _BLOCK_MAP]

    if isinstance(net, DMTrackNet):
        for p in ("weight", "bias"):
            take(f"norm.{p}", f"norm.{p}") if f"norm.{p}" in sd else missing.append(pre + f"norm.{p}")

    shapes = []
    for name, t in plan.items():
        if t.shape != params[name].shape:
            ck = src[name]
            shapes.append(f"{orig[ck]} {tuple(sd[ck].shape)} vs net.{name} "
                          f"{tuple(params[name].shape)}")

    problems = []
    if missing:
        note = ""
        if absent and strict_blocks:
            note = (f" (blocks {_ranges(absent)} absent: the checkpoint has {len(present)} blocks, "
                    f"the net depth {cfg.depth}; strict_blocks=False keeps them at their init)")
        problems.append(f"{len(missing)} key(s) missing{note}: {_few(missing)}")
    if foreign:
        problems.append(f"{len(foreign)} unexpected block tensor(s) with no counterpart in the "
                        f"ViT block (it would compute a different function): {_few(foreign)}")
    if beyond:
        problems.append(f"{len(beyond)} unexpected key(s) of blocks {_ranges(extra)} past the "
                        f"net's depth {cfg.depth} (strict_blocks=False skips them): {_few(beyond)}")
    if malformed:
        problems.append(f"{len(malformed)} malformed tensor(s): {_few(malformed)}")
    if shapes:
        width = f"checkpoint width {w.shape[0]}, " if w is not None and w.dim() == 4 else ""
        problems.append(f"width / shape mismatch in {len(shapes)} tensor(s) ({width}net dim "
                        f"{cfg.dim}, MLP hidden {params[blk.format(0) + 'fc1.weight'].shape[0]}): "
                        f"{_few(shapes)}")
    if problems:
        raise ValueError(f"source ({fmt} layout) does not fit this {type(net).__name__}: "
                         f"{'; '.join(problems)}; expected {layout}")

    with torch.no_grad():
        for name, t in plan.items():
            params[name].copy_(t.to(device=params[name].device, dtype=params[name].dtype))

    vis = re.compile(r"blocks\.\d+\.vis\..+" if isinstance(net, DeTrackNet) else r"blocks\.\d+\..+")
    targets = [n for n in params if n in ("patch_embed.weight", "patch_embed.bias", "pos_z", "pos_x")
               or vis.fullmatch(n) or (isinstance(net, DMTrackNet) and n.startswith("norm."))]
    return {"format": fmt,
            "loaded": [n for n in params if n in plan],
            "skipped": sorted(other + [orig[k] for k in sd if k not in used]),
            "missing": [n for n in targets if n not in plan],
            "opaque": opaque}
