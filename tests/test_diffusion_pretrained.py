"""The shipped tiny-sd diffusion trackers (DiffTracker.pretrained(), DINTR.pretrained()): they
track held-out synthetic sequences better than holding the first box, patched equals unpatched,
and DINTR's online fine-tuning runs and changes the UNet only for the current sequence. And
from_pretrained on a Stable Diffusion folder in the layout users download (a tiny random one:
model_index.json, unet/, vae/, scheduler/, text_encoder/, tokenizer/, feature_extractor/), with
the errors for a folder that lacks a part."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

import fasttrack  # noqa: E402
from fasttrack.data.synthetic import synthetic_split  # noqa: E402
from fasttrack.eval import metrics  # noqa: E402
from fasttrack.eval.metrics import iou  # noqa: E402
from fasttrack.trackers import DINTR, DiffTracker  # noqa: E402
from fasttrack.trackers.diffusion.tiny_sd import TINY_SD_DIR  # noqa: E402
from fasttrack.train import heldout_ao  # noqa: E402

# CI's share of the held-out test split: its first SEQS sequences, FRAMES frames each (each
# sequence costs each tracker about 15 s, most of it the 100 first-frame prompt steps).
SEQS, FRAMES = 2, 20


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _static_ao(seqs) -> float:
    return float(np.mean([metrics(np.repeat(s.gt[:1], len(s), 0), s.gt, skip_first=True)["ao"]
                          for s in seqs]))


@pytest.fixture(scope="module")
def test_seqs():
    return synthetic_split("test", num=SEQS, num_frames=FRAMES)


def test_shipped_folder_and_heldout_report():
    with open(os.path.join(TINY_SD_DIR, "heldout.json")) as f:
        report = json.load(f)
    for name in ("DiffTracker", "DINTR"):
        assert len(report[name]["per_sequence"]) == 12          # the whole test split
        assert report[name]["ao"] > report["static_test_ao"]
    with open(os.path.join(TINY_SD_DIR, "train.json")) as f:
        log = json.load(f)
    assert log["minutes"] <= 30.0                                # trained within 30 CPU minutes
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(TINY_SD_DIR) for f in fs)
    assert size < 20e6


@pytest.mark.parametrize("cls", [DiffTracker, DINTR], ids=["diff_tracker", "dintr"])
def test_pretrained_beats_the_static_box(cls, test_seqs):
    ao = heldout_ao(cls.pretrained(), test_seqs)["ao"]
    static = _static_ao(test_seqs)
    assert ao > static + 0.2, (ao, static)


@pytest.mark.parametrize("cls", [DiffTracker, DINTR], ids=["diff_tracker", "dintr"])
def test_pretrained_patched_equals_unpatched(cls, test_seqs):
    seq = test_seqs[0]
    # the shipped model and settings but 20 first-frame steps (100 shipped): the equality of the
    # two paths does not depend on how well the token is learned, and it saves CI a minute
    steps = {"prompt_steps": 20} if cls is DiffTracker else {"init_steps": 20}
    tr = cls.pretrained(**steps)
    runs = {}
    for patched in (False, True):
        fasttrack.patch(tr, backend="torch") if patched else fasttrack.unpatch(tr)
        assert tr.patched == patched
        runs[patched], _ = tr.run(seq.frames[:8], seq.gt[0], progress=False)
    assert iou(runs[True], runs[False]).min() >= 0.95, iou(runs[True], runs[False])


def test_dintr_finetunes_in_place_and_restores_per_sequence(test_seqs):
    seq = test_seqs[1]
    tr = fasttrack.patch(DINTR.pretrained(finetune_steps=2, init_steps=5), backend="torch")
    name, p = next(iter(tr._tuned.items()))
    loaded = p.detach().clone()
    tr.run(seq.frames[:4], seq.gt[0], progress=False)
    assert len(tr.finetune_losses) == 3 * 2                      # 2 steps per frame pair
    assert not torch.equal(p, loaded), name                     # the UNet was fine-tuned in place
    assert torch.isfinite(torch.stack(tr.finetune_losses)).all()
    tr.init(seq.frames[0], seq.gt[0])
    assert torch.equal(p, loaded)                               # a new sequence starts afresh


def test_dintr_finetune_backward_makes_no_square_map(test_seqs):
    """Patched, the online fine-tuning's forward and backward make no (N, N) tensor at the
    32 x 32 level (N = 1024); the same step on diffusers' unfused processor (the
    Prompt-to-Prompt path) makes them, so the watch would see one."""
    from diffusers.models.attention_processor import AttnProcessor
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Watch(TorchDispatchMode):
        def __init__(self, n):
            super().__init__()
            self.n, self.hits = n, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.hits += sum(isinstance(t, torch.Tensor) and list(t.shape).count(self.n) >= 2
                             for t in tree_leaves(out))
            return out

    seq = test_seqs[0]
    tr = fasttrack.patch(DINTR.pretrained(finetune_steps=1, init_steps=1), backend="torch")
    hits = {}
    for path in ("patched", "unfused"):
        if path == "unfused":
            fasttrack.unpatch(tr)
            tr.sd.unet.set_attn_processor(AttnProcessor())
        tr.init(seq.frames[0], seq.gt[0])
        z0, z1 = tr._encode(seq.frames[0]), tr._encode(seq.frames[1])
        watch = Watch(tr.sd.latent_size ** 2)
        with watch:
            tr._finetune(z0, z1)
        hits[path] = watch.hits
    assert len(tr.finetune_losses) == 1
    assert hits["patched"] == 0 and hits["unfused"] > 0, hits


# ------------------------------------------------------------- a Stable Diffusion folder's layout
# Tiny sizes, SD 2.1's structure (the library's own tiny configs): three cross-attention
# levels, linear projections, 4 latent channels, a VAE that downsamples 8x (128 px in, 16 x 16
# latents), prompt width 32.
from fasttrack.trackers.diffusion.sd import _TINY_UNET as _UNET, _TINY_VAE as _VAE  # noqa: E402
_CLIP_WIDTH, _CLIP_LEN = 32, 77


def _clip_byte_tokens() -> list:
    """CLIP's (GPT-2's) byte-to-unicode table: the 256 one-character base tokens of its BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _write_clip(path, gen):
    """text_encoder/ and tokenizer/ with the files, keys and shapes transformers' CLIPTextModel /
    CLIPTokenizer save_pretrained write (one layer, width 32, a byte-level vocabulary)."""
    from safetensors.torch import save_file

    base = _clip_byte_tokens()
    vocab = {t: i for i, t in enumerate(base + [t + "</w>" for t in base])}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    D, H = _CLIP_WIDTH, 2 * _CLIP_WIDTH
    enc = path / "text_encoder"
    enc.mkdir()
    (enc / "config.json").write_text(json.dumps({
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": D,
        "intermediate_size": H, "num_attention_heads": 2, "num_hidden_layers": 1,
        "max_position_embeddings": _CLIP_LEN, "vocab_size": len(vocab), "hidden_act": "gelu",
        "layer_norm_eps": 1e-05, "projection_dim": D, "attention_dropout": 0.0, "dropout": 0.0,
        "initializer_factor": 1.0, "initializer_range": 0.02, "bos_token_id": len(vocab) - 2,
        "eos_token_id": len(vocab) - 1, "pad_token_id": 1, "torch_dtype": "float32"}, indent=2))
    shapes = {"text_model.embeddings.token_embedding.weight": (len(vocab), D),
              "text_model.embeddings.position_embedding.weight": (_CLIP_LEN, D),
              "text_model.final_layer_norm.weight": (D,), "text_model.final_layer_norm.bias": (D,)}
    layer = "text_model.encoder.layers.0."
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        shapes[f"{layer}self_attn.{proj}.weight"], shapes[f"{layer}self_attn.{proj}.bias"] = (D, D), (D,)
    for ln in ("layer_norm1", "layer_norm2"):
        shapes[f"{layer}{ln}.weight"], shapes[f"{layer}{ln}.bias"] = (D,), (D,)
    shapes.update({f"{layer}mlp.fc1.weight": (H, D), f"{layer}mlp.fc1.bias": (H,),
                   f"{layer}mlp.fc2.weight": (D, H), f"{layer}mlp.fc2.bias": (D,)})
    save_file({k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()},
              str(enc / "model.safetensors"))
    tok = path / "tokenizer"
    tok.mkdir()
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (tok / "special_tokens_map.json").write_text(json.dumps(special))
    (tok / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": _CLIP_LEN, "do_lower_case": True,
        "errors": "replace", "add_prefix_space": False, **special}))


def write_sd_folder(path, seed: int = 0):
    """A tiny random-weight Stable Diffusion folder in the layout of a real one (SD 2.1 768-v as
    StableDiffusionPipeline.save_pretrained writes it: model_index.json, unet/ and vae/
    (config.json, diffusion_pytorch_model.safetensors), scheduler/ (DDIM, v-prediction,
    scaled-linear betas), text_encoder/, tokenizer/, feature_extractor/). No
    null_context.safetensors: a downloaded folder has none."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    path.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        UNet2DConditionModel(**_UNET).save_pretrained(path / "unet")
        AutoencoderKL(**_VAE).save_pretrained(path / "vae")
    DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                  prediction_type="v_prediction").save_pretrained(path / "scheduler")
    _write_clip(path, torch.Generator().manual_seed(seed))
    (path / "feature_extractor").mkdir()
    (path / "feature_extractor" / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "crop_size": 224, "size": 224,
        "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    (path / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": ["transformers", "CLIPImageProcessor"], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    return path


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return write_sd_folder(tmp_path_factory.mktemp("sd") / "stable-diffusion-tiny")


def _copy(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / folder.name)


HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None


def test_sd_folder_loads_and_both_trackers_run(sd_folder, tmp_path, test_seqs):
    """The folder as downloaded: the empty-prompt context comes from text_encoder/ + tokenizer/
    through transformers, or, without transformers, a one-line ImportError says to install it or
    to write null_context.safetensors with save_null_context, after which the folder loads. The
    UNet and VAE are the saved ones, the schedule and prediction type those of scheduler/, and
    DiffTracker and DINTR each run an init and an update on it."""
    from safetensors.torch import load_file

    from fasttrack.trackers.diffusion import sd

    folder = _copy(sd_folder, tmp_path)
    if HAS_TRANSFORMERS:
        comp = sd.load_components(folder)
        assert comp.null_context.shape == (1, _CLIP_LEN, _CLIP_WIDTH)
        assert torch.isfinite(comp.null_context).all() and comp.null_context.abs().max() > 0
    else:
        with pytest.raises(ImportError) as e:
            DiffTracker.from_pretrained(folder)
        msg = str(e.value)
        assert "\n" not in msg and "transformers" in msg and "save_null_context" in msg
        null = torch.randn(1, _CLIP_LEN, _CLIP_WIDTH, generator=torch.Generator().manual_seed(1))
        sd.save_null_context(folder, null)
        comp = sd.load_components(folder)
        assert torch.equal(comp.null_context, null)

    assert comp.image_size == 128 and comp.latent_size == 16
    assert comp.prediction_type == "v_prediction"
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(comp.alphas_cumprod, torch.cumprod(1 - betas, 0).float(),
                               atol=1e-6, rtol=0)
    for part, module in (("unet", comp.unet), ("vae", comp.vae)):
        saved = load_file(str(folder / part / "diffusion_pytorch_model.safetensors"))
        state = module.state_dict()
        assert set(saved) == set(state), part
        for k, v in saved.items():
            assert torch.equal(state[k], v), (part, k)

    seq = test_seqs[0]
    for cls, settings in ((DiffTracker, dict(prompt_steps=2)),
                          (DINTR, dict(init_steps=1, num_steps=1, finetune_steps=1))):
        tr = cls.from_pretrained(folder, **settings)
        assert tr.sd.prediction_type == "v_prediction"
        tr.init(seq[0], seq.gt[0])
        box = tr.update(seq[1])
        assert box.shape == (4,) and np.isfinite(box).all() and box[2] > 0 and box[3] > 0, cls


@pytest.mark.parametrize("part", ["unet", "vae"])
def test_sd_folder_without_a_model_part(sd_folder, tmp_path, part):
    folder = _copy(sd_folder, tmp_path)
    shutil.rmtree(folder / part)
    for cls in (DiffTracker, DINTR):
        with pytest.raises(ValueError) as e:
            cls.from_pretrained(folder)
        msg = str(e.value)
        assert "\n" not in msg and f"not a diffusers Stable Diffusion folder: no {part}/" in msg
        assert str(folder) in msg


def test_sd_folder_without_text_encoder_or_scheduler(sd_folder, tmp_path):
    """No text_encoder/ and no null_context.safetensors: an error naming both. No scheduler/:
    SD 2.x's training schedule (scaled-linear betas, epsilon prediction), sd.py's documented
    default."""
    from fasttrack.trackers.diffusion import sd

    folder = _copy(sd_folder, tmp_path)
    shutil.rmtree(folder / "text_encoder")
    with pytest.raises(ValueError) as e:
        DiffTracker.from_pretrained(folder)
    msg = str(e.value)
    assert "\n" not in msg and f"neither {sd.NULL_CONTEXT_FILE} nor text_encoder/" in msg
    sd.save_null_context(folder, torch.zeros(1, _CLIP_LEN, _CLIP_WIDTH))
    shutil.rmtree(folder / "scheduler")
    comp = sd.load_components(folder)
    assert comp.prediction_type == "epsilon"
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(comp.alphas_cumprod, torch.cumprod(1 - betas, 0).float(),
                               atol=1e-6, rtol=0)
