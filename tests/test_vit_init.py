"""load_vit_weights (fasttrack/train/vit_init.py): a fake timm / MAE ViT checkpoint with random
tensors is loaded into DeTrack.tiny, and every loaded piece is compared with an independent
reference written here from the checkpoint tensors: the patch embedding as a strided conv, the
position grids resized with F.interpolate, and a plain pre-norm ViT block (LayerNorm, softmax
attention, exact GELU MLP) against net.blocks[i].vis on fresh random tokens."""
import math

import pytest
import torch
import torch.nn.functional as F

from fasttrack.trackers.detrack import DeTrack
from fasttrack.train.vit_init import load_vit_weights

C, P, HEADS, DEPTH = 64, 8, 4, 4          # DeTrack.tiny
GZ, GX = 32 // P, 64 // P                 # template / search grid sides
VIS = ("norm1.weight", "norm1.bias", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias",
       "norm2.weight", "norm2.bias", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


def fake_vit(gen, *, dim=C, patch=P, grid=7, cls=True, depth=5, qv_bias=False, hidden=4 * C):
    """timm / MAE-layout state dict with random tensors (LayerNorm affines not 1 / 0, so a
    swapped norm shows), MAE decoder and final norm included."""
    def r(*shape, std=0.1):
        return torch.randn(*shape, generator=gen) * std

    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, grid * grid + int(cls), dim, std=1.0),
          "patch_embed.proj.weight": r(dim, 3, patch, patch), "patch_embed.proj.bias": r(dim)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim),
                   b + "attn.qkv.weight": r(3 * dim, dim),
                   b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim),
                   b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim),
                   b + "mlp.fc1.weight": r(hidden, dim), b + "mlp.fc1.bias": r(hidden),
                   b + "mlp.fc2.weight": r(dim, hidden), b + "mlp.fc2.bias": r(dim)})
        if qv_bias:
            sd[b + "attn.q_bias"], sd[b + "attn.v_bias"] = r(dim), r(dim)
        else:
            sd[b + "attn.qkv.bias"] = r(3 * dim)
    sd.update({"norm.weight": 1 + r(dim), "norm.bias": r(dim), "mask_token": r(1, 1, 32),
               "decoder_embed.weight": r(32, dim), "decoder_pos_embed": r(1, 50, 32),
               "decoder_blocks.0.attn.qkv.weight": r(96, 32), "decoder_norm.weight": r(32),
               "decoder_pred.weight": r(3 * patch * patch, 32)})
    return sd


def qkv_bias(sd, i):
    b = f"blocks.{i}.attn."
    if b + "qkv.bias" in sd:
        return sd[b + "qkv.bias"]
    return torch.cat([sd[b + "q_bias"], torch.zeros(C), sd[b + "v_bias"]])


def ref_block(sd, i, x, n_search, heads=HEADS, eps=1e-6):
    """Plain pre-norm ViT block in float64 from the checkpoint tensors -> (out, k_x, v_x)."""
    g = {k[len(f"blocks.{i}."):]: v.double() for k, v in sd.items()
         if k.startswith(f"blocks.{i}.")}

    def ln(t, w, b):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + eps) * w + b

    B, N, _ = x.shape
    D = C // heads
    h = ln(x, g["norm1.weight"], g["norm1.bias"])
    qkv = h @ g["attn.qkv.weight"].T + qkv_bias(sd, i).double()
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


def check_blocks(net, sd, gen, blocks=range(DEPTH)):
    n_search = GX * GX
    x = torch.randn(2, 3 * GZ * GZ + n_search, C, generator=gen, dtype=torch.float64)
    for i in blocks:
        with torch.no_grad():
            out, k, v = net.blocks[i].vis(x.float(), n_search)
        ref, rk, rv = ref_block(sd, i, x, n_search)
        for got, want in ((out, ref), (k, rk), (v, rv)):
            torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def vis_names(blocks=range(DEPTH)):
    return [f"blocks.{i}.vis.{n}" for i in blocks for n in VIS]


def test_mae_checkpoint_file(tmp_path, rng):
    sd = fake_vit(rng)
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": sd}, path)
    net = DeTrack.tiny(seed=0).net
    before = snapshot(net)
    report = load_vit_weights(net, path)

    expected = ["patch_embed.weight", "patch_embed.bias", "pos_z", "pos_x", *vis_names()]
    assert sorted(report["loaded"]) == sorted(expected)
    assert report["missing"] == []
    block4 = {k for k in sd if k.startswith("blocks.4.")}
    assert len(block4) == 12
    assert set(report["skipped"]) == block4 | {
        "cls_token", "norm.weight", "norm.bias", "mask_token", "decoder_embed.weight",
        "decoder_pos_embed", "decoder_blocks.0.attn.qkv.weight", "decoder_norm.weight",
        "decoder_pred.weight"}

    assert torch.equal(net.patch_embed.weight, sd["patch_embed.proj.weight"])
    assert torch.equal(net.patch_embed.bias, sd["patch_embed.proj.bias"])
    grid = sd["pos_embed"][:, 1:]
    torch.testing.assert_close(net.pos_z.data, resize(grid, GZ), atol=1e-6, rtol=0)
    torch.testing.assert_close(net.pos_x.data, resize(grid, GX), atol=1e-6, rtol=0)
    img = torch.randn(2, 3, 64, 64, generator=rng)
    want = F.conv2d(img, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=P)
    want = want.permute(0, 2, 3, 1).reshape(2, GX * GX, C) + resize(grid, GX)
    with torch.no_grad():
        torch.testing.assert_close(net.embed_search(img), want, atol=1e-5, rtol=0)

    check_blocks(net, sd, rng)
    loaded = set(report["loaded"])
    after = net.state_dict()
    unchanged = [k for k in before if k not in loaded]
    assert any(".box." in k for k in unchanged) and "box_noise" in unchanged
    for k in unchanged:
        assert torch.equal(after[k], before[k]), k


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


def test_patch_size_mismatch(rng):
    net = DeTrack.tiny(seed=0).net
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"patch.*\(16, 16\).*patch 8"):
        load_vit_weights(net, fake_vit(rng, patch=16))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k     # nothing written


def test_width_mismatch(rng):
    net = DeTrack.tiny(seed=0).net
    with pytest.raises(ValueError, match=r"width.*pos_embed.*\(1, 50, 32\).*\(1, 64, 64\)"):
        load_vit_weights(net, fake_vit(rng, dim=32))
    sd = fake_vit(rng, hidden=2 * C)            # mlp_ratio 2 against the net's 4
    before = snapshot(net)
    with pytest.raises(ValueError, match=r"blocks\.0\.vis\.fc1\.weight.*\(128, 64\).*\(256, 64\)"):
        load_vit_weights(net, sd)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_too_few_blocks(rng):
    sd = fake_vit(rng, depth=3)
    net = DeTrack.tiny(seed=0).net
    with pytest.raises(ValueError, match=r"blocks \[3\] missing"):
        load_vit_weights(net, sd)
    before = snapshot(net)
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
    with pytest.raises(ValueError, match="no ViT keys"):
        load_vit_weights(net, {"head.weight": torch.zeros(3, C)})
    sd = fake_vit(rng)
    sd["blocks.1.ls1.gamma"] = torch.ones(C)    # layer scale: no place for it in the block
    with pytest.raises(ValueError, match=r"blocks\.1\.ls1\.gamma"):
        load_vit_weights(net, sd)
