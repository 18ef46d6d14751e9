"""One tracker API for every tracker: plain PyTorch until `fasttrack.patch(tracker)`, `unpatch`
restores, `is_patched` tells (also through a module that only contains a tracker's model), the
registry's `patched=` goes through the same call, and images may be numpy arrays, tensors or PIL
images (the got10k toolkit passes PIL). CPU, the `tiny` models, the "torch" backend."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import fasttrack
from fasttrack.data.synthetic import synthetic_sequence
from fasttrack.patch import patched_modules
from fasttrack.trackers import DeTrack, DiffTracker, DINTR, DMTrack
from fasttrack.trackers.base import MAX_BOX_TO_FRAME, as_image
from fasttrack.trackers.registry import TRACKERS, build_tracker, tracker_names

pytest.importorskip("diffusers")

BUILDERS = {
    "detrack": lambda: DeTrack.tiny(seed=0),
    "diff-tracker": lambda: DiffTracker.tiny(0, prompt_steps=1, update_from=2, threshold=0.8),
    "dintr": lambda: DINTR.tiny(0, init_steps=1, num_steps=1, threshold=0.8),
    "dmtrack": lambda: DMTrack.pretrained(),     # frames without text: vision only (it warns)
}


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(3, size=(96, 112), sprite_size=(24, 28), seed=3)


def _model_of(tracker) -> torch.nn.Module:
    """A model inside the tracker that a rule patches (DeTrack: itself; diffusion: the UNet)."""
    return tracker if isinstance(tracker, torch.nn.Module) else tracker.sd.unet


@pytest.mark.parametrize("name", list(BUILDERS))
def test_plain_until_patched_and_unpatch_restores(name, seq):
    tr = BUILDERS[name]()
    assert not fasttrack.is_patched(tr) and patched_modules(tr) == []
    plain, _ = tr.track(seq.frames, seq.gt[0], progress=False)
    assert fasttrack.patch(tr, backend="torch") is tr
    assert fasttrack.is_patched(tr) and patched_modules(tr)
    fused, _ = tr.track(seq.frames, seq.gt[0], progress=False)
    np.testing.assert_allclose(fused, plain, atol=0.05)          # the same boxes, patched or not
    n = len(patched_modules(tr))
    fasttrack.patch(tr, backend="torch")                          # twice: nothing changes
    assert len(patched_modules(tr)) == n
    assert fasttrack.unpatch(tr) is tr
    assert not fasttrack.is_patched(tr)
    again, _ = tr.track(seq.frames, seq.gt[0], progress=False)
    np.testing.assert_array_equal(again, plain)                   # back to the same plain path


@pytest.mark.parametrize("name", list(BUILDERS))
def test_a_module_containing_the_model_patches_the_tracker(name):
    tr = BUILDERS[name]()
    holder = torch.nn.ModuleDict({"model": _model_of(tr)})
    fasttrack.patch(holder, backend="torch")
    assert fasttrack.is_patched(holder) and fasttrack.is_patched(tr)
    if hasattr(tr, "patched"):                                    # the diffusion trackers' map path
        assert tr.patched
    fasttrack.unpatch(tr)                                         # the records live on the slots
    assert not fasttrack.is_patched(holder) and not fasttrack.is_patched(tr)


@pytest.mark.parametrize("name", [n for n in tracker_names() if TRACKERS[n].patchable])
def test_registry_patched_goes_through_patch(name):
    assert fasttrack.is_patched(build_tracker(name, patched=True))
    assert not fasttrack.is_patched(build_tracker(name, patched=False))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_pil_images_track_like_arrays(name, seq):
    tr = BUILDERS[name]()
    arrays, _ = tr.track(seq.frames, seq.gt[0], progress=False)
    pil = [Image.fromarray(f) for f in seq.frames]
    tr.init(pil[0], seq.gt[0])
    boxes = np.stack([seq.gt[0].astype(np.float32)] + [tr.update(im) for im in pil[1:]])
    np.testing.assert_array_equal(boxes, arrays)


def test_as_image_converts_pil_once_and_rejects_bad_images():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    img, size = as_image(Image.fromarray(rgb))
    assert isinstance(img, np.ndarray) and size == (5, 7) and np.array_equal(img, rgb)
    gray, size = as_image(Image.fromarray(rgb[..., 0]))           # grayscale -> RGB
    assert gray.shape == (5, 7, 3) and np.array_equal(gray[..., 1], rgb[..., 0])
    with pytest.raises(TypeError, match="image must be an RGB .* PIL image"):
        as_image([[1, 2, 3]])
    with pytest.raises(TypeError, match="uint8"):
        as_image(rgb.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        as_image(rgb[..., :2])


def test_boxes_far_larger_than_the_frame_are_rejected(seq):
    tr = DeTrack.tiny(seed=0)
    H, W = seq.size
    with pytest.raises(ValueError, match=f"more than {MAX_BOX_TO_FRAME}x"):
        tr.init(seq[0], [0, 0, 1e9, 10])
    with pytest.raises(ValueError, match=r"boxes\[1\].*more than"):
        tr.init_batch(seq[0], [[0, 0, 10, 10], [0, 0, 10, MAX_BOX_TO_FRAME * H + 1]])
    tr.init(seq[0], [-10, -10, MAX_BOX_TO_FRAME * W, 30])         # partly outside: allowed


def test_patch_refuses_other_objects():
    with pytest.raises(TypeError, match="patch takes a torch.nn.Module or a fasttrack tracker"):
        fasttrack.patch(object())
    with pytest.raises(TypeError, match="is_patched"):
        fasttrack.is_patched("unet")


def test_run_times_each_call_and_takes_any_iterable(seq):
    tr = DeTrack.tiny(seed=0)
    seen = []
    boxes, times = tr.run((f for f in seq.frames), seq.gt[0], progress=False,
                          on_frame=lambda i, frame, box: seen.append((i, box.copy())))
    assert boxes.shape == (3, 4) and boxes.dtype == np.float32 and times.shape == (3,)
    assert (times > 0).all() and np.array_equal(boxes[0], seq.gt[0].astype(np.float32))
    assert [i for i, _ in seen] == [0, 1, 2] and all(np.array_equal(b, boxes[i]) for i, b in seen)
    limited, t2 = tr.run(seq, seq.gt[0], limit=2, progress=False)
    np.testing.assert_array_equal(limited, boxes[:2])
    boxes_mean = tr.track(seq.frames, seq.gt[0], progress=False)
    np.testing.assert_array_equal(boxes_mean[0], boxes)
    with pytest.raises(ValueError, match="at least one image"):
        tr.run([], seq.gt[0], progress=False)
