"""The shipped tiny-sd diffusion trackers (DiffTracker.pretrained(), DINTR.pretrained()): they
track held-out synthetic sequences better than holding the first box, patched equals unpatched,
and DINTR's online fine-tuning runs and changes the UNet only for the current sequence."""
from __future__ import annotations

import json
import os

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
