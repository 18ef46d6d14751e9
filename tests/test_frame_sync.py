"""A tracker frame without host syncs (fasttrack.trackers.watch.FrameWatch).

Every tracker's `update_batch`, patched and unpatched, at one and several targets, runs under
a strict watch that raises on any host transfer beyond the frame's upload (one write) and the
read of its results (one read, which must come last). The watch itself is checked first on the
calls it must catch and the ones it must not count.
"""
import numpy as np
import pytest
import torch

import fasttrack
from fasttrack.trackers.watch import FrameWatch, HostSyncError, frame_profile

pytest.importorskip("diffusers")


def test_watch_counts_each_kind_of_transfer():
    t = torch.randn(5)
    cases = {
        "item": (lambda: t[0].item(), 1, 0), "float": (lambda: float(t[1]), 1, 0),
        "if": (lambda: bool((t > 0).any()), 1, 0), "tolist": (lambda: t.tolist(), 1, 0),
        "cpu": (lambda: t.cpu(), 1, 0), "numpy": (lambda: t.numpy(), 1, 0),
        "asarray": (lambda: np.asarray(t), 1, 0),
        "tensor": (lambda: torch.tensor([1.0, 2.0]), 0, 1),
        "as_tensor": (lambda: torch.as_tensor(np.ones(3)), 0, 1),
        "new_tensor": (lambda: t.new_tensor([3.0]), 0, 1),
        # device work with Python scalars and factories is not a transfer
        "scalars": (lambda: (t * 2.0 + 1).clamp(0.0, 3.0).sum(), 0, 0),
        "factories": (lambda: torch.zeros(3) + torch.arange(3) + torch.full((3,), 2.0), 0, 0),
        # one sync, then views of what it brought over: counted once
        "read then views": (lambda: (lambda h: (h[:, :2].numpy(), h[:, 2].numpy()))(t.view(1, 5).cpu()), 1, 0),
        # two reads with device work between them: two syncs
        "two reads": (lambda: (t.sum().item(), (t * 3).max().item()), 2, 0),
    }
    for name, (fn, reads, writes) in cases.items():
        with FrameWatch() as w:
            fn()
        assert (w.reads, w.writes) == (reads, writes), (name, w.summary())
        assert w.ops >= 1 or name in ("tolist", "cpu"), name


def test_strict_watch_names_the_transfer_and_restores_tensor_methods():
    t = torch.randn(3)
    saved = torch.Tensor.tolist
    with pytest.raises(HostSyncError, match=r"read .*_local_scalar_dense.*test_frame_sync"):
        with FrameWatch(strict=True, allowed_reads=0):
            t.sum().item()
    assert torch.Tensor.tolist is saved and t.tolist() == [float(v) for v in t]
    with pytest.raises(HostSyncError, match="write"):
        with FrameWatch(strict=True, allowed_writes=0):
            torch.tensor([1.0])


def _build(name, device="cpu"):
    from fasttrack.trackers.detrack.tracker import DeTrack
    from fasttrack.trackers.diff_tracker import DiffTracker
    from fasttrack.trackers.dintr import DINTR
    from fasttrack.trackers.dmtrack.tracker import DMTrack

    d = dict(device=device)
    return {"diff-tracker": lambda: DiffTracker.pretrained(prompt_steps=2, use_updater=True, update_from=1, **d),
            "diff-tracker-updater": lambda: DiffTracker.tiny(0, prompt_steps=2, update_from=1, **d),
            "dintr": lambda: DINTR.pretrained(init_steps=2, **d),
            "dintr-paper": lambda: DINTR.pretrained(init_steps=2, reinject_steps=1, finetune_steps=1,
                                                    offset="predicted", context=0.0, **d),
            "detrack": lambda: DeTrack.pretrained(**d), "dmtrack": lambda: DMTrack.pretrained(**d)}[name]()


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "unpatched"])
@pytest.mark.parametrize("targets", [1, 3])
@pytest.mark.parametrize("name", ["diff-tracker", "diff-tracker-updater", "dintr", "dintr-paper",
                                  "detrack", "dmtrack"])
def test_a_frame_uploads_once_and_reads_once_at_the_end(name, targets, patched):
    """After a warm-up frame, one `update_batch` makes at most one host write (the frame) and
    exactly one host read, the last transfer of the frame, after all of its device work."""
    from fasttrack.bench.trackers import frames_and_boxes

    frames, boxes = frames_and_boxes(4, (72, 104), targets, seed=targets)
    tr = _build(name)
    if patched:
        fasttrack.patch(tr, backend="torch")
    with pytest.warns() if name == "dmtrack" else _nothing():
        tr.init_batch(frames[0], boxes)
    tr.update_batch(frames[1])
    with FrameWatch(strict=True, allowed_writes=1, allowed_reads=1) as w:
        out = tr.update_batch(frames[2])
    assert out.shape == (targets, 4) and np.isfinite(out).all()
    assert w.reads == 1 and w.writes <= 1, w.summary()
    kind, _, _, at = w.events[-1]
    assert kind == "read" and at >= w.ops - 8, w.summary()      # nothing but a few views after it
    if w.writes:
        assert w.events[0][0] == "write" and w.events[0][3] <= 2, w.summary()   # the upload comes first


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_frame_profile_counts_a_tracker_frame():
    """frame_profile's means equal a FrameWatch over the same frames, counted independently."""
    from fasttrack.bench.trackers import frames_and_boxes
    from fasttrack.trackers.detrack.tracker import DeTrack

    frames, boxes = frames_and_boxes(5, (64, 80), 2)
    a, b = DeTrack.pretrained(), DeTrack.pretrained()
    a.init_batch(frames[0], boxes)
    b.init_batch(frames[0], boxes)
    prof = frame_profile(a, frames[1:4])
    counts = []
    for f in frames[1:4]:
        with FrameWatch() as w:
            b.update_batch(f)
        counts.append((w.ops, w.reads, w.writes))
    ops, reads, writes = np.mean(counts, 0)
    assert prof["ops_per_frame"] == ops > 100
    assert (prof["reads_per_frame"], prof["writes_per_frame"]) == (reads, writes) == (1, 1)
    assert prof["host_ms_per_frame"] > 0
    with pytest.raises(ValueError, match="frames"):
        frame_profile(a, [])


@pytest.mark.parametrize("name", ["detrack", "dmtrack", "diff-tracker"])
def test_precision_runs_init_and_frames_under_autocast_and_restores(name, recwarn):
    """set_precision("bf16"): init and update run under CPU autocast in bfloat16 (seen from a
    hook on the model's linear layers; DeTrack's heads turn it off on purpose), fp32 never
    does, nothing stays enabled after the call. (Accuracy: the held-out check in the README.)"""
    from fasttrack.bench.trackers import frames_and_boxes

    frames, boxes = frames_and_boxes(3, (72, 96), 1)
    runs, seen = {}, []
    for prec in ("fp32", "bf16"):
        tr = _build(name).set_precision(prec)
        assert tr.precision == prec
        root = tr if isinstance(tr, torch.nn.Module) else tr.sd.unet
        hooks = [m.register_forward_pre_hook(
            lambda m, a: seen.append((prec, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))))
            for m in root.modules() if isinstance(m, torch.nn.Linear)]
        tr.init_batch(frames[0], boxes)
        runs[prec] = np.stack([tr.update_batch(f) for f in frames[1:]])
        for h in hooks:
            h.remove()
        assert not torch.is_autocast_enabled("cpu")
    assert not any(on for p, on, _ in seen if p == "fp32")
    on = [on for p, on, _ in seen if p == "bf16"]
    assert sum(on) > len(on) / 2, f"{sum(on)} of {len(on)} linear calls under autocast"
    assert all(dt == torch.bfloat16 for p, on, dt in seen if on)
    assert np.isfinite(runs["bf16"]).all()


def test_precision_rejects_unknown_values_and_tf32_is_a_no_op_on_cpu():
    from fasttrack.trackers.base import precision_context
    from fasttrack.trackers.registry import build_tracker

    tr = _build("detrack")
    with pytest.raises(ValueError, match="precision must be one of fp32, tf32, bf16, fp16, got 'fp8'"):
        tr.set_precision("fp8")
    with pytest.raises(ValueError, match="precision"):
        build_tracker("detrack", precision="half")
    saved = torch.backends.cuda.matmul.allow_tf32
    with precision_context("tf32", "cpu"):
        assert torch.backends.cuda.matmul.allow_tf32 == saved and not torch.is_autocast_enabled("cpu")
    assert build_tracker("detrack", patched=False, precision="fp16").precision == "fp16"


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["detrack", "dmtrack", "diff-tracker", "dintr"])
def test_graph_replay_gives_the_eager_boxes(name, recwarn):
    """On a GPU the frame step is captured once and replayed (fasttrack.trackers.graph): the
    boxes equal those of the same tracker run eagerly (use_graph=False)."""
    from fasttrack.bench.trackers import frames_and_boxes

    frames, boxes = frames_and_boxes(6, (72, 96), 2)
    runs = {}
    for use_graph in (True, False):
        tr = _build(name, device="cuda")
        tr.use_graph = use_graph
        fasttrack.patch(tr)
        tr.init_batch(frames[0], boxes)
        runs[use_graph] = np.stack([tr.update_batch(f) for f in frames[1:]])
    assert np.allclose(runs[True], runs[False], atol=1e-3), (runs[True], runs[False])


def test_channels_last_diffusion_tracker_gives_the_same_boxes():
    from fasttrack.bench.trackers import frames_and_boxes

    frames, boxes = frames_and_boxes(4, (72, 96), 2)
    runs = []
    for cl in (False, True):
        tr = fasttrack.patch(_build("diff-tracker"), backend="torch")
        if cl:
            assert tr.channels_last() is tr
            conv = next(m for m in tr.sd.unet.modules() if isinstance(m, torch.nn.Conv2d))
            assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        tr.init_batch(frames[0], boxes)
        runs.append(np.stack([tr.update_batch(f) for f in frames[1:]]))
    np.testing.assert_allclose(runs[1], runs[0], atol=0.05)
