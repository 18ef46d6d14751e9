"""DMTrack (the DMTrack paper): each part against an independent reference (loops, explicit softmax,
rasterized boxes), the tracker API and its errors, text handling, patched == unpatched,
batched == single, checkpoints, and that a training step reaches every part."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fasttrack.data.synthetic import synthetic_sequence
from fasttrack.patch import is_patched, patch, unpatch
from fasttrack.trackers import DMTrack
from fasttrack.trackers.dmtrack import DMTrackConfig
from fasttrack.trackers.dmtrack.mask_diffusion import (MaskDiffusion, box_mask, sampling_steps,
                                                       structure_loss)
from fasttrack.trackers.dmtrack.model import GatedCrossAttention, feature_filter
from fasttrack.trackers.dmtrack.text import CLS, PAD, SEP, tokenize
from fasttrack.trackers.dmtrack.train import (dmtrack_losses, eliminate_candidates, focal_loss,
                                              sample_batch, train_step)


def _live(seed=0, **kw):
    """A tiny DMTrack with random weights and the gate open (at init tanh(0) = 0 hides the text)."""
    t = DMTrack.tiny(seed=seed, **kw).eval()
    with torch.no_grad():
        t.net.cross.gate.fill_(0.8)
    return t


# -- parts against references -----------------------------------------------------------------
def test_box_mask_matches_rasterized_coverage():
    """Boxes with corners on a 1/R lattice (R = 10 sub-pixels per cell): counting the sub-pixels
    whose centres lie inside is then the exact coverage, an independent float64 reference."""
    rng = np.random.default_rng(1)
    for G in (6, 7):                            # 7: cell edges are not binary fractions
        R = 10 * G
        lo = rng.integers(-R // 5, R - 4, size=(9, 2))
        gt = np.concatenate([lo, lo + rng.integers(1, R // 2, size=(9, 2))], 1) / R
        got = box_mask(torch.tensor(gt), G).numpy()
        c = (np.arange(R) + 0.5) / R
        for b, (x1, y1, x2, y2) in enumerate(gt):
            inside = ((c[None, :] >= x1) & (c[None, :] < x2)) & ((c[:, None] >= y1) & (c[:, None] < y2))
            ref = inside.reshape(G, R // G, G, R // G).mean((1, 3)).ravel()
            np.testing.assert_allclose(got[b], ref, atol=1e-12)


def test_sampling_is_k_independent_samplings_averaged(rng):
    """The batched K-sample DDIM equals K separate unbatched samplings, each written out with the
    un-split input convolution cat[x_t, c] (one conv with the two weight blocks side by side)."""
    C, G, W, K, S = 24, 6, 8, 5, 3
    md = MaskDiffusion(C, G, W, timesteps=100, max_samples=7).double()
    for p in md.parameters():
        p.data.normal_(0, 0.3, generator=rng)
    md.noise.normal_(generator=rng)
    f = torch.randn(2, G * G, C, generator=rng, dtype=torch.float64)
    got = md.sample(f, K, S)
    den = md.denoiser
    ts = sampling_steps(100, S)
    abar = torch.tensor(md.abar, dtype=torch.float64)
    img = den.norm(f).transpose(1, 2).reshape(2, C, G, G)
    c = den.cond(img)
    # conv_c(c) + conv_x(x) == conv of cat[x, c] with weight [w_x | w_c]
    w_cat = torch.cat([den.conv_x.weight, den.conv_c.weight], 1)
    ref = torch.zeros(2, G * G, dtype=torch.float64)
    for b in range(2):
        for k in range(K):
            x = md.noise[k:k + 1].double()
            for i, t in enumerate(ts):
                tt = torch.tensor([t])
                W_ = den.width
                from fasttrack.trackers.dmtrack.mask_diffusion import _time_embedding
                temb = den.time(_time_embedding(tt, W_, 100).double())
                h0 = F.gelu(F.conv2d(torch.cat([x, c[b:b + 1]], 1), w_cat, den.conv_x.bias, padding=1)
                            + temb[:, :W_, None, None])
                h1 = F.gelu(den.mid(F.gelu(den.down(h0))) + temb[:, W_:, None, None])
                h = F.gelu(den.up(torch.cat([F.interpolate(h1, scale_factor=2), h0], 1)))
                logits = den.out(h)
                x0 = 2 * torch.sigmoid(logits) - 1
                if i + 1 < len(ts):
                    a, an = abar[t], abar[ts[i + 1]]
                    eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
                    x = an.sqrt() * x0 + (1 - an).sqrt() * eps
            ref[b] += torch.sigmoid(logits).view(-1) / K
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    assert sampling_steps(1000, 2) == [1000, 500]
    with pytest.raises(ValueError, match="samples"):
        md.sample(f, 0, S)
    with pytest.raises(ValueError, match="samples"):
        md.sample(f, 8, S)


def test_structure_loss_matches_formula():
    rng = np.random.default_rng(2)
    G = 5
    p = rng.uniform(0.01, 0.99, size=(3, G * G))
    m = (rng.random((3, G * G)) > 0.6).astype(float)
    got = float(structure_loss(torch.tensor(p), torch.tensor(m), G))
    total = 0.0
    for b in range(3):
        mm = m[b].reshape(G, G)
        pool = np.zeros((G, G))
        for r in range(G):
            for c in range(G):
                win = mm[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2]
                pool[r, c] = win.mean()
        w = (1 + 5 * np.abs(pool - mm)).ravel()
        pb, tb = p[b], m[b]
        bce = -(tb * np.log(pb) + (1 - tb) * np.log(1 - pb))
        wbce = (w * bce).sum() / w.sum()
        inter, union = (w * pb * tb).sum(), (w * (pb + tb)).sum()
        total += wbce + 1 - (inter + 1) / (union - inter + 1)
    assert got == pytest.approx(total / 3, rel=1e-6)


def test_focal_loss_matches_loop():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 9))
    heat = rng.uniform(0, 0.9, size=(2, 9))
    heat[0, 4] = heat[1, 0] = 1.0
    ref = 0.0
    for b in range(2):
        for i in range(9):
            p = 1 / (1 + math.exp(-logits[b, i]))
            if heat[b, i] == 1:
                ref += (1 - p) ** 2 * math.log(p)
            else:
                ref += (1 - heat[b, i]) ** 4 * p ** 2 * math.log(1 - p)
    got = float(focal_loss(torch.tensor(logits), torch.tensor(heat)))
    assert got == pytest.approx(-ref / 2, rel=1e-6)


def test_candidate_elimination_keeps_the_most_attended_inside_cells():
    rng = np.random.default_rng(4)
    target = (rng.random((4, 20)) > 0.5) * rng.uniform(0.2, 1.0, size=(4, 20))
    att = rng.random((4, 20))
    got = eliminate_candidates(torch.tensor(target), torch.tensor(att), 0.7).numpy()
    for b in range(4):
        inside = np.flatnonzero(target[b] > 0)
        keep = set(inside[np.argsort(-att[b, inside])][:math.ceil(0.7 * len(inside))])
        ref = np.array([target[b, i] if i in keep else 0.0 for i in range(20)])
        np.testing.assert_array_equal(got[b], ref)


def test_feature_filter_matches_loop():
    rng = np.random.default_rng(5)
    m = rng.random((2, 10))
    got = feature_filter(torch.tensor(m), 0.25, 0.5).numpy()
    for b in range(2):
        top = set(np.argsort(-m[b])[:3])                # ceil(0.25 * 10)
        for i in range(10):
            assert got[b, i] == pytest.approx(1 + m[b, i] if i in top else 0.5, rel=1e-12)


def test_the_mask_reaches_the_box():
    """The filter acts after the head's LayerNorm: the mask changes the centre map, and the box
    losses send gradient into the mask (a scaling before the LayerNorm is normalized away)."""
    net = _live(seed=11).net
    g = torch.Generator().manual_seed(0)
    fs = torch.randn(2, net.cfg.search_tokens, net.cfg.dim, generator=g)
    hz = torch.randn(2, net.cfg.template_tokens, net.cfg.dim, generator=g)
    m = torch.rand(2, net.cfg.search_tokens, generator=g, requires_grad=True)
    with_mask = net.head_from(fs, hz, m)
    without = net.head_from(fs, hz, None)
    assert (with_mask["logits"] - without["logits"]).abs().max() > 1e-2
    with_mask["logits"].logsumexp(-1).sum().backward()
    assert m.grad is not None and m.grad.abs().sum() > 0


def test_gated_cross_attention_matches_explicit_softmax(rng):
    C, H, L = 32, 4, 7
    m = GatedCrossAttention(C, H).double()
    for p in m.parameters():
        p.data.normal_(0, 0.2, generator=rng)
    x = torch.randn(3, 11, C, generator=rng, dtype=torch.float64)
    text = torch.randn(3, L, C, generator=rng, dtype=torch.float64)
    has = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    got = m(x, text, has)
    q = m.q(F.layer_norm(x, (C,), m.norm_x.weight, m.norm_x.bias, 1e-6))
    kv = m.kv(F.layer_norm(text, (C,), m.norm_t.weight, m.norm_t.bias, 1e-6))
    k, v = kv[..., :C], kv[..., C:]
    D = C // H
    heads = []
    for h in range(H):
        s = q[..., h * D:(h + 1) * D] @ k[..., h * D:(h + 1) * D].transpose(1, 2) / math.sqrt(D)
        heads.append(s.softmax(-1) @ v[..., h * D:(h + 1) * D])
    ref = x + math.tanh(m.gate.item()) * has[:, None, None] * m.proj(torch.cat(heads, -1))
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got[1], x[1])            # no description: identity
    m.gated = False                                      # cross_gate "none": eq. 2 as printed
    ungated = x + has[:, None, None] * m.proj(torch.cat(heads, -1))
    torch.testing.assert_close(m(x, text, has), ungated, rtol=1e-10, atol=1e-12)


def test_tokenize_layout_and_hashing():
    ids, has = tokenize(["The small RED box!", None, "   ", "a b c d e f g h"], 6, 50)
    assert has.tolist() == [1.0, 0.0, 0.0, 1.0]
    assert ids[0, 0] == CLS and ids[0, 5] == SEP and (ids[1] == PAD).all() and (ids[2] == PAD).all()
    assert ids[3, 0] == CLS and ids[3, 5] == SEP          # 4 words kept, then SEP
    again, _ = tokenize(["the small red box"], 6, 50)
    assert torch.equal(ids[0], again[0])                    # case and punctuation ignored
    assert ((ids[0, 1:5] >= 3) & (ids[0, 1:5] < 50)).all()


# -- config and tracker errors ------------------------------------------------------------
@pytest.mark.parametrize("kw,match", [
    (dict(samples=0), "samples"), (dict(samples=17), "max_samples"),
    (dict(mask_module="unet"), "mask_module"), (dict(cross_gate="sigmoid"), "cross_gate"), (dict(text_encoder="clip"), "text_encoder"),
    (dict(text_encoder="bert"), "bert_path"), (dict(search_size=72, patch=8), "even"),
    (dict(filter_keep=0.0), "filter_keep"), (dict(center_window=float("inf")), "center_window"),
    (dict(dim=62), "divisible")])
def test_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        DMTrackConfig(**{**dict(dim=64, heads=4, cross_heads=4), **kw})


def test_tracker_bad_inputs_and_text_errors():
    t = _live()
    seq = synthetic_sequence(3, (96, 128), (20, 28), seed=0)
    with pytest.raises(ValueError, match="samples"):
        t.set_run_options(samples=0)
    with pytest.raises(ValueError, match="cannot change"):
        t.set_run_options(dim=32)
    with pytest.raises(TypeError, match="text"):
        t.init(seq[0], seq.gt[0], text=5)
    with pytest.raises(ValueError, match="2 descriptions for 1 targets"):
        t.init_batch(seq[0], seq.gt[:1], text=["a", "b"])
    with pytest.raises(ValueError, match="box"):
        t.init(seq[0], [0, 0, 0, 5], text="x")
    t.init(seq[0], seq.gt[0], text="red box")
    with pytest.raises(ValueError, match="image"):
        t.update(seq[0][:50])
    with pytest.raises(TypeError, match="image"):
        t.update(seq[0].astype(np.float32))


def test_missing_text_falls_back_to_vision_only_and_warns_once():
    t = _live()
    seq = synthetic_sequence(4, (96, 128), (20, 28), seed=1)
    with pytest.warns(UserWarning, match="vision only") as rec:
        t.init(seq[0], seq.gt[0], text="   ")
    assert len(rec) == 1 and t.vision_only.tolist() == [True]
    vision, _ = t.run(seq.frames, seq.gt[0], progress=False)   # frames list: no .text
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # the second time: silent
        t.init(seq[0], seq.gt[0])
    # the same as an explicit None, and different from a described target
    t.init(seq[0], seq.gt[0], text=None)
    none = np.stack([seq.gt[0]] + [t.update(f) for f in list(seq)[1:]])
    np.testing.assert_array_equal(vision, none)
    described, _ = t.run(seq, seq.gt[0], text="the large blue tall patch", progress=False)
    assert not np.array_equal(described, vision)


def test_run_reads_the_sequence_text(monkeypatch):
    t = _live()
    seq = synthetic_sequence(3, (96, 128), (20, 28), seed=2)
    assert seq.text                                          # synthetic sequences are described
    seen = []
    real = t.net.encode_text
    monkeypatch.setattr(t.net, "encode_text", lambda texts: seen.append(list(texts)) or real(texts))
    t.run(seq, seq.gt[0], progress=False)
    t.run(seq, seq.gt[0], text="override", progress=False)
    assert seen == [[seq.text], ["override"]]


# -- equivalences -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_patched_equals_unpatched(backend):
    t = _live(seed=3, samples=3)
    seq = synthetic_sequence(5, (96, 128), (20, 28), seed=3, distractors=1)
    ref, _ = t.run(seq, seq.gt[0], progress=False)
    ref_masks = t.masks.copy()
    patch(t, backend=backend)
    assert is_patched(t) and type(t.net.cross).__name__ == "FusedGatedCrossAttention"
    got, _ = t.run(seq, seq.gt[0], progress=False)
    np.testing.assert_allclose(got, ref, atol=1e-3)
    np.testing.assert_allclose(t.masks, ref_masks, atol=1e-4)
    unpatch(t)
    assert type(t.net.cross) is GatedCrossAttention


def test_batched_equals_single_and_k_samples_change_the_mask():
    t = _live(seed=4)
    seq = synthetic_sequence(4, (112, 144), (22, 30), seed=4)
    boxes = np.stack([seq.gt[0], seq.gt[0] + [30, 10, -4, 2]])
    texts = ["the red box", None]
    with pytest.warns(UserWarning):
        t.init_batch(seq[0], boxes, text=texts)
    batched = [t.update_batch(f) for f in list(seq)[1:]]
    for i in range(2):
        s = _live(seed=4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s.init(seq[0], boxes[i], text=texts[i])
        single = [s.update(f) for f in list(seq)[1:]]
        np.testing.assert_allclose(np.stack([b[i] for b in batched]), np.stack(single), atol=1e-3)
    one = _live(seed=4)
    one.init(seq[0], seq.gt[0], text="x")
    one.update(seq[1])
    m1 = one.masks.copy()
    one.set_run_options(samples=4)
    one.init(seq[0], seq.gt[0], text="x")
    one.update(seq[1])
    assert one.masks.shape == m1.shape and not np.allclose(one.masks, m1)


def test_no_diffusion_module_and_checkpoint_round_trip(tmp_path):
    t = _live(seed=5, mask_module="none")
    assert t.net.mask is None
    seq = synthetic_sequence(3, (96, 128), (20, 28), seed=5)
    a, _ = t.run(seq, seq.gt[0], progress=False)
    assert t.masks is None
    t.save(tmp_path / "m.pt", meta={"why": "test"})
    back = DMTrack.from_checkpoint(tmp_path / "m.pt").eval()
    b, _ = back.run(seq, seq.gt[0], progress=False)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="cannot override"):
        DMTrack.from_checkpoint(tmp_path / "m.pt", dim=32)
    torch.save({"format": "other", "config": {}, "state_dict": {}}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="reads 'fasttrack.dmtrack/1'"):
        DMTrack.from_checkpoint(tmp_path / "x.pt")
    with pytest.raises(ValueError, match="missing keys"):
        _live().load_state_dict({})


# -- training -----------------------------------------------------------------------------
def test_training_step_reaches_every_part_and_fits_a_batch():
    t = DMTrack.tiny(seed=6)
    seqs = [synthetic_sequence(6, (96, 128), (20, 28), seed=s) for s in range(3)]
    gen = np.random.default_rng(0)
    batch = sample_batch(seqs, 6, t.config, generator=gen, text_drop=0.0)
    assert all(text in [s.text for s in seqs] for text in batch["texts"])
    assert batch["template"].shape == (6, 3, 32, 32) and batch["search"].shape == (6, 3, 64, 64)
    net = t.net
    with torch.no_grad():
        net.cross.gate.fill_(0.5)    # at tanh(0) = 0 no gradient reaches the text side yet
    net.train()
    with torch.enable_grad():
        losses = dmtrack_losses(net, batch, torch.Generator().manual_seed(0), eliminate=True)
        losses["total"].backward()
    for name in ("text.embed.weight", "cross.gate", "mask.denoiser.conv_x.weight",
                 "mask.denoiser.cond.weight", "head.maps.weight", "blocks.0.qkv.weight"):
        g = net.get_parameter(name).grad
        assert g is not None and g.abs().sum() > 0, name
    net.zero_grad()
    opt = torch.optim.AdamW(t.parameters(), lr=3e-3)
    first = train_step(t, opt, batch, torch.Generator().manual_seed(1))["total"]
    for i in range(25):
        last = train_step(t, opt, batch, torch.Generator().manual_seed(1))["total"]
    assert last < 0.7 * first
    single = dmtrack_losses(net, batch, torch.Generator().manual_seed(0), double_sample=False)
    assert math.isfinite(single["total"].item()) and single["struct"] > 0


# -- the optional BERT encoder (fasttrack[text]) ----------------------------------------------
_BERT_SCRIPT = r"""
import sys
import numpy as np, torch, pytest
from transformers import BertConfig, BertModel, BertTokenizer
from fasttrack.data.synthetic import synthetic_sequence
from fasttrack.trackers import DMTrack

tmp = __import__("pathlib").Path(sys.argv[1])
folder = tmp / "bert"
folder.mkdir()
# a 1-layer, 32-wide BERT with a 12-word WordPiece vocabulary, saved like a downloaded one
words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "red", "blue", "small", "box",
         "large", "patch"]
(folder / "vocab.txt").write_text("\n".join(words) + "\n")
BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
torch.manual_seed(0)
BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64)).save_pretrained(str(folder))

t = DMTrack.tiny(seed=0, text_encoder="bert", bert_path=str(folder), bert_dim=32).eval()
tokens, has = t.net.encode_text(["the small red box", None])
assert tokens.shape == (2, 12, 64) and has.tolist() == [1.0, 0.0]
# independent: the saved BERT's last hidden state through the trained projection
tok = BertTokenizer.from_pretrained(str(folder))
enc = tok(["the small red box"], padding="max_length", max_length=12, return_tensors="pt")
hidden = BertModel.from_pretrained(str(folder)).eval()(**enc).last_hidden_state
torch.testing.assert_close(tokens[:1], t.net.text.proj(hidden), rtol=1e-5, atol=1e-5)
assert not any("bert" in k for k in t.state_dict()), "the frozen BERT is not checkpointed"
seq = synthetic_sequence(3, (96, 128), (20, 28), seed=7)
a, _ = t.run(seq, seq.gt[0], progress=False)
t.save(tmp / "m.pt")
b, _ = DMTrack.from_checkpoint(tmp / "m.pt").eval().run(seq, seq.gt[0], progress=False)
np.testing.assert_array_equal(a, b)
with pytest.raises(ValueError, match="not a folder"):
    DMTrack.from_checkpoint(tmp / "m.pt", bert_path=str(tmp / "nowhere"))
with pytest.raises(ValueError, match="width 32"):
    DMTrack.tiny(text_encoder="bert", bert_path=str(folder), bert_dim=768)
print("BERT OK")
"""


def test_bert_encoder_from_a_local_folder(tmp_path):
    """The BERT path end to end, in a fresh process started outside the source tree: there
    `import kernels` is Hugging Face's package (transformers >= 5 needs it), not the checkout's
    top-level kernels/ folder that `python -m pytest` puts first on sys.path."""
    import os
    import subprocess
    import sys

    pytest.importorskip("transformers", reason="the optional fasttrack[text] extra")
    script = tmp_path / "bert_check.py"
    script.write_text(_BERT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "BERT OK" in out.stdout, out.stdout + out.stderr


def test_pytracking_adapter_takes_the_description():
    t = _live()
    seq = synthetic_sequence(3, (96, 128), (20, 28), seed=8)
    seen = []
    real = t.net.encode_text
    t.net.encode_text = lambda texts: seen.append(list(texts)) or real(texts)
    t.initialize(seq[0], {"init_bbox": list(seq.gt[0]), "init_text": "the blue patch"})
    out = t.track(seq[1])
    assert seen == [["the blue patch"]] and len(out["target_bbox"]) == 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_step_equals_eager():
    """The whole step (ViT, cross-attention, K = 5 batched samplings, head) replayed from a CUDA
    graph gives the eager step's boxes; patched (fused cross-attention) too."""
    seq = synthetic_sequence(8, (112, 144), (22, 30), seed=9)
    eager = DMTrack.pretrained(samples=5).cuda()
    eager.use_graph = False
    graphed = DMTrack.pretrained(samples=5).cuda()
    patch(graphed)
    a, _ = eager.run(seq, seq.gt[0], progress=False)
    b, _ = graphed.run(seq, seq.gt[0], progress=False)
    assert graphed._graph.graph is not None
    np.testing.assert_allclose(a, b, atol=1e-2)   # pixels; fp32, same weights
