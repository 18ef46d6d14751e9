"""DeTrack's optional joint whole-box head (box_head="center", center_head.py): its targets and
box read-out against independent numpy references, the peak / Hann-window choice between two
look-alikes, config errors, checkpoints, patched == unpatched, batched == single, training."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fasttrack.data.synthetic import synthetic_sequence
from fasttrack.patch import patch, unpatch
from fasttrack.trackers import DeTrack
from fasttrack.trackers.detrack import DeTrackConfig
from fasttrack.trackers.detrack.center_head import CenterHead, center_targets, hann_grid
from fasttrack.trackers.detrack.train import sample_batch, train_step


def _targets_np(gt, grid, min_sigma=0.5):
    """Loop-form reference: the cell holding each box centre and a normalized Gaussian over the
    cell centres with sigma = max(min_sigma, sqrt(w h) * grid / 6)."""
    cells, maps = [], []
    for x1, y1, x2, y2 in gt:
        cx, cy = (x1 + x2) / 2 * grid, (y1 + y2) / 2 * grid
        col, row = min(max(math.floor(cx), 0), grid - 1), min(max(math.floor(cy), 0), grid - 1)
        cells.append(row * grid + col)
        sigma = max(min_sigma, math.sqrt(max(x2 - x1, 0) * max(y2 - y1, 0)) * grid / 6)
        m = np.zeros((grid, grid))
        for r in range(grid):
            for c in range(grid):
                m[r, c] = math.exp(-((c + 0.5 - cx) ** 2 + (r + 0.5 - cy) ** 2) / (2 * sigma ** 2))
        maps.append((m / m.sum()).ravel())
    return np.array(cells), np.stack(maps)


def test_center_targets_match_loop_reference():
    rng = np.random.default_rng(0)
    for grid in (7, 8):  # 7: the cells do not divide the unit square evenly in binary
        lo = rng.uniform(-0.1, 0.8, size=(9, 2))
        gt = np.concatenate([lo, lo + rng.uniform(0.02, 0.5, size=(9, 2))], 1)
        gt[0] = [0.98, 0.98, 1.1, 1.2]        # centre past the crop: clamped to the last cell
        cell, soft = center_targets(torch.tensor(gt), grid)
        ref_cell, ref_soft = _targets_np(gt, grid)
        np.testing.assert_array_equal(cell.numpy(), ref_cell)
        np.testing.assert_allclose(soft.numpy(), ref_soft, rtol=1e-12, atol=1e-15)


def test_hann_grid_matches_outer_product():
    w = 0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(5) + 0.5) / 5)
    np.testing.assert_allclose(hann_grid(5, dtype=torch.float64).numpy(), np.outer(w, w).ravel(),
                               rtol=1e-14)
    assert hann_grid(5).min() > 0  # the border cells stay reachable


def test_box_at_reads_offset_and_size_at_the_cell():
    G, B = 6, 5
    head = CenterHead(16, G)
    gen = torch.Generator().manual_seed(0)
    out = {"offset": torch.randn(B, 2, G * G, generator=gen),
           "size": torch.randn(B, 2, G * G, generator=gen)}
    cell = torch.randint(0, G * G, (B,), generator=gen)
    got = head.box_at(out, cell).numpy()
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for i, c in enumerate(cell.tolist()):
        row, col = divmod(c, G)
        cx = (col + sig(out["offset"][i, 0, c].item())) / G
        cy = (row + sig(out["offset"][i, 1, c].item())) / G
        w, h = sig(out["size"][i, 0, c].item()), sig(out["size"][i, 1, c].item())
        np.testing.assert_allclose(got[i], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2],
                                   rtol=1e-5, atol=1e-6)


def _two_lookalikes(G=7, C=16, border=0, middle=24, lead=1.05):
    """A head whose map is driven only by the query term, and features with one strong channel
    at two cells: `border` (slightly stronger, by `lead`) and `middle`."""
    head = CenterHead(C, G).double()
    with torch.no_grad():
        for conv in (head.conv1, head.conv2, head.maps):
            conv.weight.zero_()
            conv.bias.zero_()
        head.k.weight.copy_(torch.eye(C))
        head.k.bias.zero_()
        head.q.weight.zero_()
        head.q.bias.zero_()
        head.q.bias[0] = 40.0                  # query = 40 e_0: logit_i ~ LN(f)_i[0]
    f = torch.zeros(1, G * G, C, dtype=torch.float64)
    f[0, :, 1] = 1.0                           # a flat background (LN of a zero row is 0)
    f[0, border, 0] = 10.0 * lead
    f[0, middle, 0] = 10.0
    r = torch.randn(1, 4, C, dtype=torch.float64)
    return head, f, r


def test_peak_picks_one_lookalike_and_the_window_prefers_the_centre():
    head, f, r = _two_lookalikes()
    head.requires_grad_(False)
    out = head(f, r)
    prob = out["logits"].softmax(-1)
    assert out["cell"].item() == 0 == int(prob.argmax())         # plain argmax: the stronger copy
    assert out["peak"].item() == pytest.approx(prob[0, 0].item())
    torch.testing.assert_close(out["xyxy"], head.box_at(out, out["cell"]))
    # one box for one object: zero offset/size maps give a half-crop box centred in cell 0
    np.testing.assert_allclose(out["xyxy"][0].numpy(), [0.5 / 7 - 0.25] * 2 + [0.5 / 7 + 0.25] * 2)
    windowed = head(f, r, window=1.0)
    w = hann_grid(7, dtype=torch.float64)
    assert windowed["cell"].item() == 24 == int((prob * w).argmax())  # the window's choice
    torch.testing.assert_close(windowed["logits"], out["logits"])    # the map itself is unchanged
    with pytest.raises(ValueError, match="49 search tokens"):
        head(f[:, :48], r)


def test_config_errors_and_option_override(tmp_path):
    with pytest.raises(ValueError, match=r"box_head must be one of \('bins', 'center'\)"):
        DeTrackConfig(box_head="corner")
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="center_window must be finite and >= 0"):
            DeTrackConfig(box_head="center", center_window=bad)
    tr = DeTrack.tiny(box_head="center", seed=2)
    assert tr.net.center is not None and DeTrack.tiny().net.center is None
    tr.save(tmp_path / "c.pt")
    win = DeTrack.from_checkpoint(tmp_path / "c.pt", center_window=0.5)
    assert win.config.box_head == "center" and win.config.center_window == 0.5
    with pytest.raises(ValueError, match="cannot override"):
        DeTrack.from_checkpoint(tmp_path / "c.pt", box_head="bins")
    bins = DeTrack.tiny(seed=2)
    with pytest.raises(ValueError, match=r"unexpected keys \[.net.center.conv1.bias"):
        bins.load_state_dict(str(tmp_path / "c.pt"))
    with pytest.raises(ValueError, match="needs x_out"):
        tr.net.head(torch.zeros(1, 4, tr.config.dim), torch.zeros(1, tr.config.traj_len, 4))


def test_version_2_checkpoints_load_as_bins_and_cli_offers_every_head(tmp_path):
    """A format-2 file (written before box_head existed: no box_head / center_window in its
    config) loads as the bin decoder with the same weights; `train --box-head` offers BOX_HEADS."""
    from fasttrack.cli import build_parser
    from fasttrack.trackers.detrack.model import BOX_HEADS

    tr = DeTrack.tiny(seed=7)
    tr.save(tmp_path / "v3.pt")
    ck = torch.load(tmp_path / "v3.pt", weights_only=True)
    ck["format"] = "fasttrack.detrack/2"
    for key in ("box_head", "center_window"):
        ck["config"].pop(key)
    torch.save(ck, tmp_path / "v2.pt")
    old = DeTrack.from_checkpoint(tmp_path / "v2.pt")
    assert old.config.box_head == "bins" and old.net.center is None
    for k, v in tr.state_dict().items():
        torch.testing.assert_close(old.state_dict()[k], v, rtol=0, atol=0)
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "box_head")
    assert tuple(train.choices) == BOX_HEADS


@pytest.fixture(scope="module")
def center_tracker():
    """A tiny centre-head DeTrack with weights large enough that the map is not flat."""
    tr = DeTrack.tiny(box_head="center", seed=4).eval()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for blk in tr.net.blocks:
            for p in blk.box.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.7 / p.shape[1] ** 0.5)
        for p in tr.net.center.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5 / max(p[0].numel(), 1) ** 0.5)
    return tr


@pytest.fixture(scope="module")
def seqs():
    return [synthetic_sequence(5, size=(96, 112), sprite_size=(18 + 3 * i, 22), seed=10 + i)
            for i in range(3)]


def test_center_head_checkpoint_patched_and_batched(center_tracker, seqs, tmp_path):
    tr = center_tracker
    ref, _ = tr.track(seqs[0].frames, seqs[0].gt[0], progress=False)
    assert np.isfinite(ref).all() and np.abs(np.diff(ref[1:, :2], axis=0)).max() > 0
    tr.save(tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["format"] == "fasttrack.detrack/3"
    np.testing.assert_array_equal(
        DeTrack.from_checkpoint(tmp_path / "c.pt").track(seqs[0].frames, seqs[0].gt[0],
                                                         progress=False)[0], ref)
    patch(tr, backend="torch")
    try:
        out, _ = tr.track(seqs[0].frames, seqs[0].gt[0], progress=False)
    finally:
        unpatch(tr)
    np.testing.assert_allclose(out, ref, atol=1e-3)
    seq = seqs[1]
    boxes = np.array([seq.gt[0], seq.gt[0] + [5, 3, 0, 0], [10, 12, 20, 18]], np.float32)
    tr.init_batch(seq.frames[0], boxes)  # K targets in one video, one batched step per frame
    batched = np.stack([tr.update_batch(f) for f in seq.frames[1:]], 1)
    for i in range(3):
        single, _ = tr.track(seq.frames, boxes[i], progress=False)
        np.testing.assert_allclose(batched[i], single[1:], atol=1e-3)


def test_training_steps_reach_the_center_head(seqs):
    tr = DeTrack.tiny(box_head="center", seed=6)
    batch = sample_batch(seqs, 4, tr.config, generator=np.random.default_rng(0))
    opt = torch.optim.Adam(tr.parameters(), lr=2e-3)
    losses = [train_step(tr, opt, batch, generator=torch.Generator().manual_seed(0))
              for _ in range(8)]
    assert {"center", "center_l1", "center_giou"} <= set(losses[0])
    assert all(math.isfinite(v) for v in losses[-1].values())
    assert losses[-1]["center"] < losses[0]["center"]
    assert losses[-1]["total"] < 0.7 * losses[0]["total"]
    assert tr.net.center.q.weight.grad is not None and tr.net.center.maps.weight.grad.abs().sum() > 0
