"""fasttrack.patch / unpatch on diffusers models: same outputs and gradients, exact round trips.

The reference is the unpatched model itself (diffusers' own processors). Tiny UNets of the
SD 1.x, SD 2.x and SDXL kinds (tests/unet_fixtures.py), odd 12 x 10 latents, CFG batches of 2,
fresh random weights and inputs every run.
"""
import sys

import pytest
import torch

pytest.importorskip("diffusers")
from diffusers.models.attention_processor import (  # noqa: E402
    Attention, AttnProcessor, AttnProcessor2_0, SlicedAttnProcessor)

import fasttrack  # noqa: E402
from fasttrack.patch import patched_modules  # noqa: E402
from fasttrack.integrations.diffusers_attention import FasttrackAttnProcessor  # noqa: E402
from _oracle import rel_err  # noqa: E402
from unet_fixtures import CONFIGS, make_unet, unet_inputs  # noqa: E402

LATENT = (12, 10)
TOL = 1e-5  # float32: same math, different kernels (relative Frobenius error)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _seed(rng) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=rng))


def _processors(model):
    return {n: m.processor for n, m in model.named_modules() if isinstance(m, Attention)}


def _forward(unet, inputs, **kw):
    s, t, c, e = inputs
    return unet(s, t, encoder_hidden_states=c, **e, **kw).sample


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_patched_equals_unpatched(cfg, rng):
    unet = make_unet(cfg, seed=_seed(rng))
    inputs = unet_inputs(unet, batch=2, latent=LATENT, seed=_seed(rng))
    with torch.no_grad():
        want = _forward(unet, inputs)
        assert fasttrack.patch(unet, backend="torch") is unet
        assert all(isinstance(p, FasttrackAttnProcessor) for p in _processors(unet).values())
        assert rel_err(_forward(unet, inputs), want) < TOL
        # Recording every layer switches them to fasttrack's ops: the output must not move.
        with fasttrack.AttentionRecorder(unet, resolution=LATENT, self_layers="all"):
            assert rel_err(_forward(unet, inputs), want) < TOL


def test_unpatch_restores_and_patch_twice_is_a_no_op(rng):
    unet = make_unet("sd21", seed=_seed(rng))
    before = _processors(unet)
    fasttrack.patch(unet)
    once = _processors(unet)
    n_records = len(patched_modules(unet))
    assert n_records == len(before)
    fasttrack.patch(unet, backend="torch")
    assert len(patched_modules(unet)) == n_records
    assert all(once[n] is p for n, p in _processors(unet).items())
    assert fasttrack.is_patched(unet)
    fasttrack.unpatch(unet)
    assert not fasttrack.is_patched(unet)
    after = _processors(unet)
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    assert all(type(p) is AttnProcessor2_0 for p in after.values())


@pytest.mark.parametrize("proc", [AttnProcessor, lambda: SlicedAttnProcessor(3)], ids=["classic", "sliced"])
def test_classic_processors(proc, rng):
    """AttnProcessor / SlicedAttnProcessor use attn.scale: the patched flavor follows them."""
    unet = make_unet("sd15", seed=_seed(rng))
    original = proc()
    unet.set_attn_processor(original)
    inputs = unet_inputs(unet, batch=2, latent=LATENT, seed=_seed(rng))
    with torch.no_grad():
        want = _forward(unet, inputs)
        fasttrack.patch(unet, backend="torch")
        assert all(p.flavor == "classic" for p in _processors(unet).values())
        assert rel_err(_forward(unet, inputs), want) < TOL
    fasttrack.unpatch(unet)
    assert all(p is original for p in _processors(unet).values())


class _UserProcessor:
    """A processor fasttrack does not know: it must be left alone."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        return AttnProcessor2_0()(attn, hidden_states, encoder_hidden_states, attention_mask, temb) * 0.5


def test_unknown_processors_are_left_alone(rng):
    unet = make_unet("sd15", seed=_seed(rng))
    name = "up_blocks.2.attentions.1.transformer_blocks.0.attn2"
    custom = _UserProcessor()
    dict(unet.named_modules())[name].set_processor(custom)
    inputs = unet_inputs(unet, batch=2, latent=LATENT, seed=_seed(rng))
    with torch.no_grad():
        want = _forward(unet, inputs)
        fasttrack.patch(unet, backend="torch")
        procs = _processors(unet)
        assert procs[name] is custom
        assert sum(isinstance(p, FasttrackAttnProcessor) for p in procs.values()) == len(procs) - 1
        assert rel_err(_forward(unet, inputs), want) < TOL
        with pytest.raises(ValueError, match=f"layer {name} uses _UserProcessor"):
            with fasttrack.AttentionRecorder(unet, resolution=LATENT, cross_layers=name):
                pass
    fasttrack.unpatch(unet)


def test_encoder_attention_mask(rng):
    unet = make_unet("sd21", seed=_seed(rng))
    s, t, c, e = unet_inputs(unet, batch=2, latent=LATENT, seed=_seed(rng))
    mask = torch.ones(2, c.shape[1])
    mask[1, 3:] = 0
    inputs = (s, t, c, dict(e, encoder_attention_mask=mask))
    with torch.no_grad():
        want = _forward(unet, inputs)
        assert rel_err(want, _forward(unet, (s, t, c, e))) > 1e-4  # the mask matters
        fasttrack.patch(unet, backend="torch")
        assert rel_err(_forward(unet, inputs), want) < TOL
        with fasttrack.AttentionRecorder(unet, resolution=LATENT, self_layers="all"):
            assert rel_err(_forward(unet, inputs), want) < TOL


def _train_grads(unet, inputs, seed):
    """Loss gradients in train mode (dropout on, same RNG stream) w.r.t. the UNet's parameters
    and encoder_hidden_states."""
    s, t, c, e = inputs
    ctx = c.clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = unet(s, t, encoder_hidden_states=ctx, **e).sample
    loss = (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum()
    params = [p for p in unet.parameters() if p.requires_grad]
    return out.detach(), torch.autograd.grad(loss, [ctx] + params)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "grad-checkpointing"])
def test_train_mode_gradients(checkpointing, rng):
    unet = make_unet("sdxl", seed=_seed(rng), dropout=0.1).train()
    if checkpointing:
        unet.enable_gradient_checkpointing()
    inputs = unet_inputs(unet, batch=2, latent=LATENT, seed=_seed(rng))
    seed = _seed(rng)
    want_out, want = _train_grads(unet, inputs, seed)
    fasttrack.patch(unet, backend="torch")
    got_out, got = _train_grads(unet, inputs, seed)
    assert rel_err(got_out, want_out) < TOL
    assert all(rel_err(g, w) < 1e-4 for g, w in zip(got, want))
    # Recorded layers run fasttrack's differentiable ops; under checkpointing their forwards are
    # re-run inside backward, which must neither fail nor record twice.
    with fasttrack.AttentionRecorder(unet, resolution=LATENT, self_layers="all") as rec:
        got_out, got = _train_grads(unet, inputs, seed)
    assert rec.num_calls == 1
    assert rel_err(got_out, want_out) < TOL
    assert all(rel_err(g, w) < 1e-4 for g, w in zip(got, want))


class _TwoUNetTracker(torch.nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.template = a
        self.search = torch.nn.Sequential(b)


def test_any_module_containing_attention(rng):
    a, b = make_unet("sd15", seed=_seed(rng)), make_unet("sd21", seed=_seed(rng))
    tracker = _TwoUNetTracker(a, b)
    before = _processors(tracker)
    inputs_a = unet_inputs(a, batch=1, latent=LATENT, seed=_seed(rng))
    inputs_b = unet_inputs(b, batch=1, latent=LATENT, seed=_seed(rng))
    with torch.no_grad():
        want = (_forward(a, inputs_a), _forward(b, inputs_b))
        fasttrack.patch(tracker, backend="torch")
        assert all(isinstance(p, FasttrackAttnProcessor) for p in _processors(tracker).values())
        assert rel_err(_forward(a, inputs_a), want[0]) < TOL
        assert rel_err(_forward(b, inputs_b), want[1]) < TOL
    fasttrack.unpatch(tracker)
    assert all(p is before[n] for n, p in _processors(tracker).items())


def test_missing_diffusers_names_the_extra(rng, monkeypatch):
    unet = make_unet("sd15", seed=_seed(rng))
    # As if diffusers could not be imported here (the model came from elsewhere).
    monkeypatch.setitem(sys.modules, "diffusers.models.attention_processor", None)
    with pytest.raises(ImportError, match=r"pip install fasttrack\[diffusers\]"):
        fasttrack.patch(unet)
    monkeypatch.undo()
    fasttrack.unpatch(unet)
    assert all(type(p) is AttnProcessor2_0 for p in _processors(unet).values())


def test_vae_attention_4d_input_group_norm_residual(rng):
    """The VAE mid-block Attention takes (B, C, h, w) input, group_norm, a residual connection
    and rescale_output_factor: the processor's other half of AttnProcessor2_0."""
    from diffusers import AutoencoderKL

    torch.manual_seed(_seed(rng))
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, latent_channels=4).eval()
    attn = [m for m in vae.modules() if isinstance(m, Attention)]
    assert attn and all(m.group_norm is not None and m.residual_connection for m in attn)
    for m in attn:
        m.rescale_output_factor = 1.7
    x = torch.randn(2, 3, 13, 11, generator=rng)
    with torch.no_grad():
        want = vae(x).sample
        fasttrack.patch(vae, backend="torch")
        assert rel_err(vae(x).sample, want) < TOL
