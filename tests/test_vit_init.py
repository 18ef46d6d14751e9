"""load_vit_weights (fasttrack/train/vit_init.py): fake MAE / timm and OSTrack checkpoints with the
exact key names of the public files and random tensors are loaded into DeTrack.tiny and
DMTrack.tiny, and every loaded piece is compared with an independent reference written here from
the checkpoint tensors: the patch embedding as a strided conv, the position grids resized with
F.interpolate, and a plain pre-norm ViT block (LayerNorm, softmax attention, exact GELU MLP)
against the net's block on fresh random tokens. The ViT-B files themselves (MAE's
mae_pretrain_vit_base.pth, OSTrack's vitb_256 / vitb_384 OSTrack_ep0300.pth.tar) are checked
key by key and shape by shape on the meta device, against detrack256 / detrack384 / dmtrack256."""
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from fasttrack.trackers.detrack import DeTrack
from fasttrack.trackers.dmtrack import DMTrack
from fasttrack.trackers.dmtrack.model import DMTrackNet
from fasttrack.train.vit_init import load_vit_weights

C, P, HEADS, DEPTH = 64, 8, 4, 4          # DeTrack.tiny and DMTrack.tiny
GZ, GX = 32 // P, 64 // P                 # template / search grid sides
VIS = ("norm1.weight", "norm1.bias", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias",
       "norm2.weight", "norm2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
SUBS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
        "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
        "mlp.fc2.weight", "mlp.fc2.bias")


# ----------------------------------------------------------------------------- the layouts
def mae_shapes(dim=768, depth=12, patch=16, grid=14, mlp=4):
    """{key: shape} of MAE's mae_pretrain_vit_base.pth ("model" entry; timm's ViT-B/16 keys
    without its classifier head)."""
    s = {"cls_token": (1, 1, dim), "pos_embed": (1, 1 + grid * grid, dim),
         "patch_embed.proj.weight": (dim, 3, patch, patch), "patch_embed.proj.bias": (dim,)}
    for i in range(depth):
        b = f"blocks.{i}."
        s.update({b + "norm1.weight": (dim,), b + "norm1.bias": (dim,),
                  b + "attn.qkv.weight": (3 * dim, dim), b + "attn.qkv.bias": (3 * dim,),
                  b + "attn.proj.weight": (dim, dim), b + "attn.proj.bias": (dim,),
                  b + "norm2.weight": (dim,), b + "norm2.bias": (dim,),
                  b + "mlp.fc1.weight": (mlp * dim, dim), b + "mlp.fc1.bias": (mlp * dim,),
                  b + "mlp.fc2.weight": (dim, mlp * dim), b + "mlp.fc2.bias": (dim,)})
    s.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return s


def ostrack_shapes(dim=768, depth=12, patch=16, template=128, search=256, grid=14, channel=256):
    """{key: shape} of an OSTrack checkpoint's "net" entry (lib/models/ostrack: the ViT as
    `backbone` with pos_embed_z / pos_embed_x from finetune_track, the CenterPredictor as
    `box_head`: three towers of four Conv-BN-ReLU layers, channel, channel/2, /4, /8, and a 1x1
    conv each to 1 (ctr), 2 (offset), 2 (size) maps)."""
    s = {"backbone." + k: v for k, v in mae_shapes(dim, depth, patch, grid).items()}
    s["backbone.pos_embed_z"] = (1, (template // patch) ** 2, dim)
    s["backbone.pos_embed_x"] = (1, (search // patch) ** 2, dim)
    chans = (dim, channel, channel // 2, channel // 4, channel // 8)
    for branch, out in (("ctr", 1), ("offset", 2), ("size", 2)):
        for j in range(4):
            h = f"box_head.conv{j + 1}_{branch}."
            s[h + "0.weight"], s[h + "0.bias"] = (chans[j + 1], chans[j], 3, 3), (chans[j + 1],)
            for n in ("weight", "bias", "running_mean", "running_var"):
                s[h + "1." + n] = (chans[j + 1],)
            s[h + "1.num_batches_tracked"] = ()
        s[f"box_head.conv5_{branch}.weight"] = (out, chans[4], 1, 1)
        s[f"box_head.conv5_{branch}.bias"] = (out,)
    return s


def fill(shapes, gen):
    """Random tensors for a {key: shape} layout (LayerNorm / BatchNorm scales near 1 so a
    swapped norm shows, position grids unit scale, BatchNorm counters int64)."""
    sd = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000)
        elif (k.endswith("norm1.weight") or k.endswith("norm2.weight") or k == "norm.weight"
              or k.endswith(".norm.weight") or k.endswith("running_var")):
            sd[k] = 1 + 0.1 * torch.rand(shape, generator=gen)
        else:
            sd[k] = torch.randn(shape, generator=gen) * (1.0 if "pos_embed" in k else 0.1)
    return sd


def fake_vit(gen, *, dim=C, patch=P, grid=7, cls=True, depth=DEPTH, qv_bias=False, hidden=4 * C,
             decoder=True):
    """MAE / timm-layout state dict with random tensors, the MAE decoder included."""
    sd = fill(mae_shapes(dim, depth, patch, grid, mlp=hidden // dim), gen)
    if not cls:
        sd["pos_embed"] = sd["pos_embed"][:, 1:].clone()
    if qv_bias:
        for i in range(depth):
            del sd[f"blocks.{i}.attn.qkv.bias"]
            sd[f"blocks.{i}.attn.q_bias"] = torch.randn(dim, generator=gen) * 0.1
            sd[f"blocks.{i}.attn.v_bias"] = torch.randn(dim, generator=gen) * 0.1
    if decoder:
        sd.update({"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, dim),
                   "decoder_pos_embed": torch.zeros(1, 50, 32),
                   "decoder_blocks.0.attn.qkv.weight": torch.zeros(96, 32),
                   "decoder_norm.weight": torch.ones(32),
                   "decoder_pred.weight": torch.zeros(3 * patch * patch, 32)})
    return sd


def fake_ostrack(gen, *, dim=C, depth=DEPTH, gz=GZ, gx=GX, grid=7):
    """OSTrack-layout "net" state dict at the tiny width, exact key names."""
    return fill(ostrack_shapes(dim, depth, P, gz * P, gx * P, grid, channel=16), gen)


def box_head_keys(sd):
    return {k for k in sd if k.startswith("box_head.")}


# ----------------------------------------------------------------------------- references
def qkv_bias(sd, i, pre=""):
    b = f"{pre}blocks.{i}.attn."
    if b + "qkv.bias" in sd:
        return sd[b + "qkv.bias"]
    return torch.cat([sd[b + "q_bias"], torch.zeros(C), sd[b + "v_bias"]])


def ref_block(sd, i, x, n_search, pre="", heads=HEADS, eps=1e-6):
    """Plain pre-norm ViT block in float64 from the checkpoint tensors -> (out, k_x, v_x)."""
    b = f"{pre}blocks.{i}."
    g = {k[len(b):]: v.double() for k, v in sd.items() if k.startswith(b)}

    def ln(t, w, bias):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + eps) * w + bias

    B, N, _ = x.shape
    D = C // heads
    h = ln(x, g["norm1.weight"], g["norm1.bias"])
    qkv = h @ g["attn.qkv.weight"].T + qkv_bias(sd, i, pre).double()
    q, k, v = (t.reshape(B, N, heads, D).transpose(1, 2) for t in qkv.split(C, -1))
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), -1)
    o = (att @ v).transpose(1, 2).reshape(B, N, C)
    x = x + o @ g["attn.proj.weight"].T + g["attn.proj.bias"]
    m = ln(x, g["norm2.weight"], g["norm2.bias"]) @ g["mlp.fc1.weight"].T + g["mlp.fc1.bias"]
    m = 0.5 * m * (1 + torch.erf(m / math.sqrt(2)))
    x = x + m @ g["mlp.fc2.weight"].T + g["mlp.fc2.bias"]
    return x, k[:, :, N - n_search:], v[:, :, N - n_search:]


def resize(pos_tokens, side):
    G = math.isqrt(pos_tokens.shape[1])
    grid = pos_tokens.reshape(1, G, G, C).permute(0, 3, 1, 2)
    out = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).reshape(1, side * side, C)


def vit_block(net, i):
    return net.blocks[i].vis if hasattr(net.blocks[i], "vis") else net.blocks[i]


def check_blocks(net, sd, gen, blocks=range(DEPTH), pre=""):
    n_search = GX * GX
    x = torch.randn(2, 3 * GZ * GZ + n_search, C, generator=gen, dtype=torch.float64)
    for i in blocks:
        with torch.no_grad():
            out, k, v = vit_block(net, i)(x.float(), n_search)
        ref, rk, rv = ref_block(sd, i, x, n_search, pre)
        for got, want in ((out, ref), (k, rk), (v, rv)):
            torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def check_patch_embed(net, sd, gen, pos_x, pre=""):
    """The search embedding against a strided conv of the checkpoint's patch weights plus the
    expected position grid."""
    w, b = sd[pre + "patch_embed.proj.weight"], sd[pre + "patch_embed.proj.bias"]
    assert torch.equal(net.patch_embed.weight, w) and torch.equal(net.patch_embed.bias, b)
    img = torch.randn(2, 3, 64, 64, generator=gen)
    want = F.conv2d(img, w, b, stride=P).permute(0, 2, 3, 1).reshape(2, GX * GX, C) + pos_x
    with torch.no_grad():
        torch.testing.assert_close(net.embed_search(img), want, atol=1e-5, rtol=0)


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def assert_untouched(net, before, loaded=()):
    after = net.state_dict()
    for k, v in before.items():
        if k not in loaded:
            assert torch.equal(after[k], v), k


def vis_names(blocks=range(DEPTH), vis=".vis"):
    return [f"blocks.{i}{vis}.{n}" for i in blocks for n in VIS]


NETS = {"detrack": lambda: DeTrack.tiny(seed=0).net, "dmtrack": lambda: DMTrack.tiny(seed=0).net}


# ----------------------------------------------------------------------------- MAE / timm
def test_mae_checkpoint_file(tmp_path, rng):
    sd = fake_vit(rng)
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": sd}, path)
    net = DeTrack.tiny(seed=0).net
    before = snapshot(net)
    report = load_vit_weights(net, path)

    assert report["format"] == "mae" and report["opaque"] == []
    expected = ["patch_embed.weight", "patch_embed.bias", "pos_z", "pos_x", *vis_names()]
    assert sorted(report["loaded"]) == sorted(expected)
    assert report["missing"] == []
    assert set(report["skipped"]) == {
        "cls_token", "norm.weight", "norm.bias", "mask_token", "decoder_embed.weight",
        "decoder_pos_embed", "decoder_blocks.0.attn.qkv.weight", "decoder_norm.weight",
        "decoder_pred.weight"}

    grid = sd["pos_embed"][:, 1:]
    torch.testing.assert_close(net.pos_z.data, resize(grid, GZ), atol=1e-6, rtol=0)
    torch.testing.assert_close(net.pos_x.data, resize(grid, GX), atol=1e-6, rtol=0)
    check_patch_embed(net, sd, rng, resize(grid, GX))
    check_blocks(net, sd, rng)
    unchanged = [k for k in before if k not in set(report["loaded"])]
    assert any(".box." in k for k in unchanged) and "box_noise" in unchanged
    assert_untouched(net, before, set(report["loaded"]))


def test_mae_into_dmtrack_loads_the_final_norm(rng):
    sd = fake_vit(rng)
    net = DMTrack.tiny(seed=0).net
    before = snapshot(net)
    report = load_vit_weights(net, {"model": sd})
    assert report["format"] == "mae"
    assert sorted(report["loaded"]) == sorted(["patch_embed.weight", "patch_embed.bias", "pos_z",
                                               "pos_x", "norm.weight", "norm.bias",
                                               *vis_names(vis="")])
    assert "norm.weight" not in report["skipped"] and "cls_token" in report["skipped"]
    assert torch.equal(net.norm.weight, sd["norm.weight"])
    assert torch.equal(net.norm.bias, sd["norm.bias"])
    torch.testing.assert_close(net.pos_z.data, resize(sd["pos_embed"][:, 1:], GZ), atol=1e-6, rtol=0)
    check_patch_embed(net, sd, rng, resize(sd["pos_embed"][:, 1:], GX))
    check_blocks(net, sd, rng)
    assert_untouched(net, before, set(report["loaded"]))     # text, cross, mask, head


def test_grid_without_cls_at_search_size(rng):
    sd = fake_vit(rng, grid=GX, cls=False)          # (1, 64, C): the search grid itself
    sd["step"] = 7                                  # non-tensor entry: reported, not fatal
    net = DeTrack.tiny(seed=0).net
    report = load_vit_weights(net, sd)
    assert "step" in report["skipped"] and "pos_embed" not in report["skipped"]
    assert torch.equal(net.pos_x.data, sd["pos_embed"])   # no resize: row-major order kept
    torch.testing.assert_close(net.pos_z.data, resize(sd["pos_embed"], GZ), atol=1e-6, rtol=0)


def test_q_bias_v_bias(rng):
    sd = fake_vit(rng, qv_bias=True)
    net = DeTrack.tiny(seed=0).net
    report = load_vit_weights(net, sd)
    assert report["missing"] == []
    for i in range(DEPTH):
        b = f"blocks.{i}.attn."
        want = torch.cat([sd[b + "q_bias"], torch.zeros(C), sd[b + "v_bias"]])
        assert torch.equal(net.blocks[i].vis.qkv.bias, want)
        assert f"blocks.{i}.attn.q_bias" not in report["skipped"]
    check_blocks(net, sd, rng)          # k of the reference has zero bias: checks k directly


@pytest.mark.parametrize("wrapper,prefix", [
    (None, ""), ("model", ""), ("state_dict", "module."), ("module", "encoder."),
    ("model", "backbone."), ("state_dict", "module.backbone.")])
def test_wrappers_and_prefixes(tmp_path, rng, wrapper, prefix):
    sd = fake_vit(rng)
    src = {prefix + k: v for k, v in sd.items()}
    if wrapper is not None:
        src = {wrapper: src, "epoch": 10}
    torch.save(src, tmp_path / "ckpt.pth")
    net, plain = DeTrack.tiny(seed=0).net, DeTrack.tiny(seed=0).net
    report = load_vit_weights(net, tmp_path / "ckpt.pth")
    load_vit_weights(plain, sd)
    assert len(report["loaded"]) == 4 + 12 * DEPTH
    assert prefix + "cls_token" in report["skipped"]
    for (k, a), b in zip(net.state_dict().items(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    check_blocks(net, sd, rng, blocks=[0, DEPTH - 1])


# ----------------------------------------------------------------------------- OSTrack
# Stand-ins for the classes OSTrack's trainer pickles, under their real names (pickle stores a
# class by module and name; save_ostrack_file provides the modules while it saves).
class _Settings:
    __module__, __qualname__ = "lib.train.admin.settings", "Settings"


class _AverageMeter:
    __module__, __qualname__ = "lib.train.admin.stats", "AverageMeter"


class _EasyDict(dict):  # OSTrack's cfg: a dict subclass with attributes
    __module__, __qualname__ = "easydict", "EasyDict"


class _Trap:
    """Unpickles as open(path, "w") under a plain pickle: proves the loader runs no pickled
    callable."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def save_ostrack_file(path, net_sd, monkeypatch, trap=None):
    """torch.save an OSTrack-trainer checkpoint: {"net": sd} plus the training state OSTrack's
    trainer pickles with it (objects of classes from its own `lib` package, an easydict config,
    numpy scalars, the optimizer state); afterwards `lib` and `easydict` cannot be imported."""
    import numpy as np

    names = {"lib": None, "lib.train": None, "lib.train.admin": None,
             "lib.train.admin.settings": ("Settings", _Settings),
             "lib.train.admin.stats": ("AverageMeter", _AverageMeter),
             "easydict": ("EasyDict", _EasyDict)}
    for mod_name, entry in names.items():
        mod = types.ModuleType(mod_name)
        if entry:
            setattr(mod, *entry)
        monkeypatch.setitem(sys.modules, mod_name, mod)
    settings = _Settings()
    settings.project_path = "train/ostrack/vitb_256_mae_ce_32x4_ep300"
    settings.cfg = _EasyDict(MODEL=_EasyDict(HEAD=_EasyDict(TYPE="CENTER", NUM_CHANNELS=256)))
    meter = _AverageMeter()
    meter.avg, meter.count = np.float64(0.25), np.int64(60000)
    state = {"epoch": 300, "actor_type": "OSTrackActor", "net_type": "OSTrack", "net": net_sd,
             "net_info": None, "constructor": None,
             "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3)}},
                           "param_groups": [{"lr": 4e-5, "params": [0]}]},
             "stats": {"train": {"Loss/total": meter}}, "settings": settings}
    if trap is not None:
        state["trap"] = _Trap(str(trap))
    torch.save(state, path)
    for mod_name in names:
        monkeypatch.delitem(sys.modules, mod_name)


@pytest.mark.parametrize("kind", ["detrack", "dmtrack"])
def test_ostrack_checkpoint_file(tmp_path, rng, monkeypatch, kind):
    sd = fake_ostrack(rng)
    path = tmp_path / "OSTrack_ep0300.pth.tar"
    trap = tmp_path / "trap-was-run"
    save_ostrack_file(path, sd, monkeypatch, trap=trap)
    with pytest.raises(Exception):                      # the plain loaders cannot read it
        torch.load(path, weights_only=True)
    net = NETS[kind]()
    before = snapshot(net)
    report = load_vit_weights(net, path)

    assert not trap.exists()                            # no pickled callable was run
    assert report["format"] == "ostrack"
    assert {"lib.train.admin.settings.Settings", "lib.train.admin.stats.AverageMeter",
            "easydict.EasyDict", "io.open"} <= set(report["opaque"])
    vis = ".vis" if kind == "detrack" else ""
    norm = [] if kind == "detrack" else ["norm.weight", "norm.bias"]
    assert sorted(report["loaded"]) == sorted(["patch_embed.weight", "patch_embed.bias", "pos_z",
                                               "pos_x", *norm, *vis_names(vis=vis)])
    assert report["missing"] == []
    skipped = box_head_keys(sd) | {"backbone.cls_token", "backbone.pos_embed"}
    if kind == "detrack":
        skipped |= {"backbone.norm.weight", "backbone.norm.bias"}
    assert set(report["skipped"]) == skipped
    assert len(box_head_keys(sd)) == 3 * (4 * 7 + 2)

    # the tracking grids are the net's: copied as they are, not taken from the MAE pos_embed
    assert torch.equal(net.pos_z.data, sd["backbone.pos_embed_z"])
    assert torch.equal(net.pos_x.data, sd["backbone.pos_embed_x"])
    check_patch_embed(net, sd, rng, sd["backbone.pos_embed_x"], pre="backbone.")
    check_blocks(net, sd, rng, pre="backbone.")
    if kind == "dmtrack":
        assert torch.equal(net.norm.weight, sd["backbone.norm.weight"])
        assert torch.equal(net.norm.bias, sd["backbone.norm.bias"])
    assert_untouched(net, before, set(report["loaded"]))


def test_ostrack_grids_resized_and_segment_embeddings(rng):
    """An OSTrack file made for other crop sizes (template grid 3, search grid 6) into the tiny
    net (4, 8): each grid resized on its own; OSTrack's segment embeddings (SEP_SEG), added to
    every template / search token, folded into the grids."""
    sd = fake_ostrack(rng, gz=3, gx=6)
    sd["backbone.template_segment_pos_embed"] = torch.randn(1, 1, C, generator=rng)
    sd["backbone.search_segment_pos_embed"] = torch.randn(1, 1, C, generator=rng)
    net = DeTrack.tiny(seed=0).net
    report = load_vit_weights(net, {"net": sd})
    want_z = resize(sd["backbone.pos_embed_z"], GZ) + sd["backbone.template_segment_pos_embed"]
    want_x = resize(sd["backbone.pos_embed_x"], GX) + sd["backbone.search_segment_pos_embed"]
    torch.testing.assert_close(net.pos_z.data, want_z, atol=1e-6, rtol=0)
    torch.testing.assert_close(net.pos_x.data, want_x, atol=1e-6, rtol=0)
    assert not any("segment" in k for k in report["skipped"])


# ----------------------------------------------------------------------------- ViT-B, exact
VITB_PARAMS = 86_567_656 - (768 * 1000 + 1000)   # timm ViT-B/16 without its ImageNet head

CASES = {   # name: (layout shapes, file wrapper, tracker factory, (template grid, search grid))
    "ostrack256-detrack256": (ostrack_shapes(), "net", DeTrack.detrack256, (8, 16)),
    "ostrack384-detrack384": (ostrack_shapes(template=192, search=384), "net", DeTrack.detrack384,
                              (12, 24)),
    "ostrack256-detrack384": (ostrack_shapes(), "net", DeTrack.detrack384, (12, 24)),
    "ostrack256-dmtrack256": (ostrack_shapes(), "net", DMTrack.dmtrack256, (8, 16)),
    "mae-detrack256": (mae_shapes(), "model", DeTrack.detrack256, (8, 16)),
    "mae-detrack384": (mae_shapes(), "model", DeTrack.detrack384, (12, 24)),
    "mae-dmtrack256": (mae_shapes(), "model", DMTrack.dmtrack256, (8, 16)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_vitb_checkpoints_key_by_key_on_meta(case):
    """The public ViT-B files' exact key sets and shapes (meta tensors: no data, no memory)
    against the paper-size nets: every ViT parameter of the net is set, with the right shape,
    and everything else in the file is reported as skipped."""
    shapes, wrapper, factory, (gz, gx) = CASES[case]
    fmt = case.split("-")[0].rstrip("0123456789")
    backbone = {k: s for k, s in shapes.items() if not k.startswith("box_head.")
                and not k.endswith(("pos_embed_z", "pos_embed_x"))}
    assert sum(math.prod(s) for s in backbone.values()) == VITB_PARAMS
    if fmt == "ostrack":
        assert len(shapes) == len(backbone) + 2 + 90 == 242
    sd = {k: torch.empty(s, device="meta", dtype=torch.long if not s else torch.float32)
          for k, s in shapes.items()}
    net = factory(device="meta").net
    report = load_vit_weights(net, {wrapper: sd, "epoch": 300})
    assert report["format"] == fmt
    dm = isinstance(net, DMTrackNet)
    vis = "" if dm else ".vis"
    norm = ["norm.weight", "norm.bias"] if dm else []
    assert sorted(report["loaded"]) == sorted(["patch_embed.weight", "patch_embed.bias", "pos_z",
                                               "pos_x", *norm, *vis_names(range(12), vis)])
    assert report["missing"] == []
    pre = "backbone." if fmt == "ostrack" else ""
    skipped = {pre + "cls_token"}
    if fmt == "ostrack":
        skipped |= {pre + "pos_embed"} | box_head_keys(sd)
    if not dm:
        skipped |= {pre + "norm.weight", pre + "norm.bias"}
    assert set(report["skipped"]) == skipped
    assert net.pos_z.shape == (1, gz * gz, 768) and net.pos_x.shape == (1, gx * gx, 768)
    assert net.patch_embed.weight.shape == (768, 3, 16, 16)


def test_vitb_checkpoint_missing_qkv_on_meta():
    sd = {k: torch.empty(s, device="meta") for k, s in ostrack_shapes().items() if s}
    del sd["backbone.blocks.7.attn.qkv.weight"]
    with pytest.raises(ValueError, match=r"1 key\(s\) missing: backbone\.blocks\.7\.attn\.qkv\."
                                         r"weight;.*OSTrack layout"):
        load_vit_weights(DeTrack.detrack256(device="meta").net, {"net": sd})


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kind", ["detrack", "dmtrack"])
def test_missing_key_names_it_and_writes_nothing(rng, kind):
    net = NETS[kind]()
    before = snapshot(net)
    sd = fake_ostrack(rng)
    del sd["backbone.blocks.2.attn.qkv.weight"]
    with pytest.raises(ValueError) as e:
        load_vit_weights(net, {"net": sd})
    msg = str(e.value)
    assert "\n" not in msg
    assert "ostrack layout" in msg and "1 key(s) missing: backbone.blocks.2.attn.qkv.weight;" in msg
    assert "expected the OSTrack layout {'net': {backbone.patch_embed.proj.weight/bias" in msg
    assert_untouched(net, before)

    sd = fake_ostrack(rng)                      # many missing: the first few and a count
    for i in range(DEPTH):
        del sd[f"backbone.blocks.{i}.attn.qkv.weight"], sd[f"backbone.blocks.{i}.attn.qkv.bias"]
    with pytest.raises(ValueError, match=r"8 key\(s\) missing: backbone\.blocks\.0\.attn\.qkv\.weight, "
                                         r"backbone\.blocks\.0\.attn\.qkv\.bias, .*\(3 more\)"):
        load_vit_weights(net, {"net": sd})
    sd = fake_ostrack(rng)
    del sd["backbone.pos_embed_x"]
    with pytest.raises(ValueError, match=r"missing: backbone\.pos_embed_x;"):
        load_vit_weights(net, {"net": sd})
    if kind == "dmtrack":                       # its final norm is part of the layout
        sd = fake_vit(rng)
        del sd["norm.bias"]
        with pytest.raises(ValueError, match=r"mae layout.*missing: norm\.bias;"):
            load_vit_weights(net, sd)
    assert_untouched(net, before)


def test_patch_size_mismatch(rng):
    net = DeTrack.tiny(seed=0).net
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"patch.*\(16, 16\).*patch 8"):
        load_vit_weights(net, fake_vit(rng, patch=16))
    assert_untouched(net, before)


@pytest.mark.parametrize("kind", ["detrack", "dmtrack"])
def test_width_mismatch(rng, kind):
    net = NETS[kind]()
    before = snapshot(net)
    with pytest.raises(ValueError) as e:
        load_vit_weights(net, {"net": fake_ostrack(rng, dim=32)})
    msg = str(e.value)
    assert "\n" not in msg and "width / shape mismatch in" in msg
    assert "checkpoint width 32, net dim 64" in msg
    assert ("backbone.patch_embed.proj.weight (32, 3, 8, 8) vs net.patch_embed.weight "
            "(64, 3, 8, 8)") in msg
    assert "OSTrack layout" in msg
    with pytest.raises(ValueError, match=r"pos_embed \(1, 50, 32\) vs net\.pos_z \(1, 16, 64\)"):
        load_vit_weights(net, fake_vit(rng, dim=32))
    vis = ".vis" if kind == "detrack" else ""
    with pytest.raises(ValueError, match=rf"MLP hidden 256\): blocks\.0\.mlp\.fc1\.weight \(128, 64\) "
                                         rf"vs net\.blocks\.0{vis}\.fc1\.weight \(256, 64\)"):
        load_vit_weights(net, fake_vit(rng, hidden=2 * C))      # mlp_ratio 2 against the net's 4
    assert_untouched(net, before)


def test_wrong_depth(rng):
    net = DeTrack.tiny(seed=0).net
    before = snapshot(net)
    sd = fake_ostrack(rng, depth=6)             # two blocks too many
    with pytest.raises(ValueError, match=r"24 unexpected key\(s\) of blocks 4-5 past the net's depth 4 "
                                         r"\(strict_blocks=False skips them\): backbone\.blocks\.4\."):
        load_vit_weights(net, {"net": sd})
    assert_untouched(net, before)
    report = load_vit_weights(net, {"net": sd}, strict_blocks=False)
    extra = {k for k in sd if k.startswith(("backbone.blocks.4.", "backbone.blocks.5."))}
    assert len(extra) == 24 and extra <= set(report["skipped"])
    check_blocks(net, sd, rng, pre="backbone.")


def test_too_few_blocks(rng):
    sd = fake_vit(rng, depth=3)
    net = DeTrack.tiny(seed=0).net
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"12 key\(s\) missing \(blocks 3 absent: the checkpoint has 3 "
                                         r"blocks, the net depth 4; strict_blocks=False keeps them "
                                         r"at their init\): blocks\.3\.norm1\.weight"):
        load_vit_weights(net, sd)
    assert_untouched(net, before)
    report = load_vit_weights(net, sd, strict_blocks=False)
    assert report["missing"] == vis_names([3])
    assert set(report["loaded"]) & set(vis_names([3])) == set()
    for k, v in net.blocks[3].state_dict().items():
        assert torch.equal(v, before["blocks.3." + k]), k
    check_blocks(net, sd, rng, blocks=range(3))


def test_bad_sources(tmp_path, rng):
    net = DeTrack.tiny(seed=0).net
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="source"):
        load_vit_weights(net, text)
    with pytest.raises(FileNotFoundError, match="source"):
        load_vit_weights(net, tmp_path / "absent.pth")
    with pytest.raises(TypeError, match="source"):
        load_vit_weights(net, 42)
    with pytest.raises(TypeError, match="net"):
        load_vit_weights(DeTrack.tiny(seed=0), fake_vit(rng))
    with pytest.raises(ValueError, match=r"no ViT keys.*neither layout.*OSTrack layout.*MAE / timm"):
        load_vit_weights(net, {"head.weight": torch.zeros(3, C)})
    # a fasttrack checkpoint is neither layout either
    with pytest.raises(ValueError, match="no ViT keys"):
        load_vit_weights(net, {"state_dict": DeTrack.tiny(seed=0).state_dict()})
    sd = fake_vit(rng)
    sd["blocks.1.ls1.gamma"] = torch.ones(C)    # layer scale: no place for it in the block
    with pytest.raises(ValueError, match=r"1 unexpected block tensor\(s\) with no counterpart.*"
                                         r"blocks\.1\.ls1\.gamma"):
        load_vit_weights(net, sd)
    sd = fake_vit(rng)
    sd["pos_embed"] = torch.zeros(1, 1 + 7 * 8, C)   # not a square grid
    with pytest.raises(ValueError, match=r"malformed.*pos_embed \(1, 57, 64\)"):
        load_vit_weights(net, sd)


# ----------------------------------------------------------------------------- command line
def test_cli_dmtrack_init_vit(tmp_path, rng, monkeypatch, capsys):
    """`fasttrack train dmtrack --init-vit OSTRACK_FILE`: the file reaches the network (one
    optimizer step later the patch embedding is still the checkpoint's to within the step);
    a file that does not fit is one error line; tiny-sd takes no --init-vit."""
    from cli_helpers import run_cli

    sd = fake_ostrack(rng)
    path = tmp_path / "OSTrack_ep0300.pth.tar"
    save_ostrack_file(path, sd, monkeypatch)
    rc, out, err = run_cli(capsys, "train", "dmtrack", "--init-vit", path, "--steps", 1,
                           "--batch", 2, "--eval-every", 1, "--val-sequences", 1,
                           "--val-frames", 4, "--out", tmp_path / "run", "--no-progress",
                           "--threads", 1)
    assert rc == 0, err
    assert f"init from {path} (ostrack layout): {4 + 2 + 12 * DEPTH} tensors loaded" in out
    trained = DMTrack.from_checkpoint(tmp_path / "run" / "dmtrack.pt")
    w = sd["backbone.patch_embed.proj.weight"]
    assert (trained.net.patch_embed.weight - w).abs().max() < 1e-3 < w.abs().max()

    bad = tmp_path / "wide.pth"
    torch.save({"net": fake_ostrack(rng, dim=32)}, bad)
    rc, out, err = run_cli(capsys, "train", "dmtrack", "--init-vit", bad, "--steps", 1,
                           "--out", tmp_path / "bad", "--no-progress", "--threads", 1)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "width / shape mismatch" in err
    rc, out, err = run_cli(capsys, "train", "tiny-sd", "--init-vit", path)
    assert rc == 2 and "--init-vit do not apply to tiny-sd" in err
