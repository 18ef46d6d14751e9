"""The photo library (fasttrack.data.photos: fetch, split, manifest), the photo sequence
generator (fasttrack.data.photo_sequences), the synthetic generator without its colour
shortcut, the training augmentations and the data plumbing (eval names, training pools).

Fetching runs against a fake `apt-get` that hands out .deb files built here (ar + data.tar.xz),
so nothing here needs the network; the real library is used by tests/test_photo_heldout.py.
"""
from __future__ import annotations

import io
import json
import os
import stat
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fasttrack.data.photo_sequences import photo_sequence_from, photo_split
from fasttrack.data.photos import (PhotoLibrary, PhotoLibraryError, _group, fetch_photos,
                                   photo_split_of)
from fasttrack.data.synthetic import SPLIT_SIZES, synthetic_split



# ------------------------------------------------------------------ fake Debian packages

def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _deb(files: dict[str, bytes]) -> bytes:
    """A minimal .deb: an ar archive with debian-binary and data.tar.xz holding `files`."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w:xz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", tar_buf.getvalue())]
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, body in members:
        out.write(f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode())
        out.write(body)
        if len(body) % 2:
            out.write(b"\n")
    return out.getvalue()


def _textured(rng, h, w) -> np.ndarray:
    """Blocky colour noise (8 px cells): structure that survives shrinking, as a photo's does."""
    cells = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(cells, 8, 0), 8, 1)[:h, :w]


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    """A fake apt-get on the PATH that serves mate-backgrounds and tuxpaint-stamps-default."""
    rng = np.random.default_rng(0)
    repo = tmp_path / "repo"
    repo.mkdir()
    big = _textured(rng, 600, 800)
    walls = {
        # two renderings of one KDE wallpaper: the larger is kept
        "usr/share/wallpapers/Autumn/contents/images/800x600.png": _png(big),
        "usr/share/wallpapers/Autumn/contents/images/400x300.png": _png(big[::2, ::2]),
        "usr/share/wallpapers/Autumn/contents/screenshot.png": _png(big),
        # too small, and uniform: both dropped
        "usr/share/backgrounds/mate/tiny.png": _png(_textured(rng, 100, 120)),
        "usr/share/backgrounds/mate/flat.png": _png(np.full((500, 700, 3), 77, np.uint8)),
        "usr/share/backgrounds/mate/nature/Garden.png": _png(_textured(rng, 450, 900)),
    }
    (repo / "mate-backgrounds_1.0-1_all.deb").write_bytes(_deb(walls))
    stamp = np.zeros((90, 120, 4), np.uint8)
    stamp[10:70, 20:110, :3] = _textured(rng, 60, 90)
    stamp[10:70, 20:110, 3] = 255
    stamps = {
        "usr/share/tuxpaint/stamps/animals/birds/crow.png": _png(stamp),
        "usr/share/tuxpaint/stamps/animals/birds/crow_mirror.png": _png(stamp),
        "usr/share/tuxpaint/stamps/animals/birds/cartoon/tweety.png": _png(stamp),
        "usr/share/tuxpaint/stamps/food/fruit/kiwi.png": _png(stamp),
    }
    (repo / "tuxpaint-stamps-default_2.0-1_all.deb").write_bytes(_deb(stamps))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "apt-get"
    script.write_text(f"""#!{sys.executable}
import shutil, sys, glob
pkg = sys.argv[2]
found = glob.glob({str(repo)!r} + "/" + pkg + "_*.deb")
if not found:
    print("E: Unable to locate package " + pkg, file=sys.stderr)
    sys.exit(100)
shutil.copy(found[0], ".")
""")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return {"stamp": stamp}


def test_groups_and_split_are_fixed():
    assert _group("usr/share/wallpapers/Autumn/contents/images/1920x1080.jpg") == "Autumn"
    assert _group("usr/share/wallpapers/Flow/contents/images_dark/720x1440.jpg") == "Flow"
    assert _group("usr/share/backgrounds/gnome/adwaita-l.webp") == "adwaita"
    assert _group("usr/share/backgrounds/gnome/adwaita-d.webp") == "adwaita"
    assert _group("usr/share/backgrounds/mate/abstract/Elephants_3840x2160.jpg") == "Elephants"
    splits = [photo_split_of("pkg", f"picture-{i}") for i in range(4000)]
    share = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(share["train"] - 0.7) < 0.03 and abs(share["val"] - 0.1) < 0.02
    assert abs(share["test"] - 0.2) < 0.03
    assert splits == [photo_split_of("pkg", f"picture-{i}") for i in range(4000)]


def test_fetch_selects_shrinks_and_splits(tmp_path, fake_apt):
    root = tmp_path / "lib"
    lib = fetch_photos(root, ["mate-backgrounds", "tuxpaint-stamps-default"], progress=False)
    by_group = {(e["package"], e["group"]): e for e in lib.entries}
    assert set(by_group) == {("mate-backgrounds", "Autumn"), ("mate-backgrounds", "Garden"),
                             ("tuxpaint-stamps-default", "animals/birds/crow"),
                             ("tuxpaint-stamps-default", "food/fruit/kiwi")}
    autumn = by_group[("mate-backgrounds", "Autumn")]
    assert autumn["path"].endswith("800x600.png") and (autumn["width"], autumn["height"]) == (512, 384)
    assert autumn["version"] == "1.0-1" and autumn["kind"] == "background"
    crow = by_group[("tuxpaint-stamps-default", "animals/birds/crow")]
    assert crow["kind"] == "object" and crow["category"] == "animals/birds"
    for e in lib.entries:
        assert e["split"] == photo_split_of(e["package"], e["group"])
        assert e["file"].startswith(e["split"] + "/") and (root / e["file"]).is_file()
    # the object is cut to its alpha's bounding box, colours intact (lossless PNG)
    img = np.asarray(Image.open(root / crow["file"]))
    np.testing.assert_array_equal(img, fake_apt["stamp"][10:70, 20:110])
    # re-running keeps what is there and fetches nothing new
    again = fetch_photos(root, ["mate-backgrounds"], progress=False)
    assert again.entries == lib.entries
    assert PhotoLibrary.open(root).entries == lib.entries


def test_fetch_failures_leave_the_library(tmp_path, fake_apt):
    root = tmp_path / "lib"
    fetch_photos(root, ["mate-backgrounds"], progress=False)
    before = (root / "manifest.json").read_text()
    with pytest.raises(PhotoLibraryError, match="apt-get download gnome-backgrounds failed"):
        fetch_photos(root, ["gnome-backgrounds"], progress=False)
    assert (root / "manifest.json").read_text() == before
    with pytest.raises(PhotoLibraryError, match="unknown photo source"):
        fetch_photos(root, ["nope"], progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(PhotoLibraryError, match="is a file"):
        fetch_photos(tmp_path / "file", ["mate-backgrounds"], progress=False)


def test_library_errors(tmp_path):
    with pytest.raises(PhotoLibraryError, match="fasttrack dataset photos"):
        PhotoLibrary.open(tmp_path / "none")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(PhotoLibraryError, match="unreadable manifest"):
        PhotoLibrary.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps(
        [{"file": "test/a.jpg", "split": "test", "kind": "background", "package": "p"}]))
    lib = PhotoLibrary.open(tmp_path)
    with pytest.raises(PhotoLibraryError, match="misses 1 file"):
        lib.backgrounds("test")
    with pytest.raises(PhotoLibraryError, match="no 'train' backgrounds"):
        lib.backgrounds("train")
    with pytest.raises(ValueError, match="split must be one of"):
        lib.backgrounds("dev")


def test_cli_fetch(tmp_path, fake_apt, capsys):
    from cli_helpers import run_cli

    code, out, err = run_cli(capsys, "dataset", "photos", "--out", str(tmp_path / "lib"),
                             "--sources", "mate-backgrounds", "tuxpaint-stamps-default")
    assert code == 0, err
    assert "backgrounds {'train'" in out and (tmp_path / "lib" / "manifest.json").is_file()
    code, out, err = run_cli(capsys, "dataset", "photos", "--out", str(tmp_path / "lib2"),
                             "--sources", "plasma")
    assert code == 2 and err.count("\n") == 1 and "unknown photo source" in err


# ------------------------------------------------------------------ photo sequences

class _Library:
    """An in-memory stand-in for PhotoLibrary: grey backgrounds, magenta objects; records the
    splits it is asked for."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.asked = set()
        self._bg = []
        for _ in range(3):
            v = rng.integers(30, 200, (150, 210, 1)).astype(np.uint8)
            self._bg.append(np.repeat(v, 3, -1))
        self._obj = []
        for k, (h, w) in enumerate(((40, 30), (25, 50), (60, 60))):
            o = np.zeros((h, w, 4), np.uint8)
            yy, xx = np.mgrid[0:h, 0:w]
            inside = ((yy - h / 2) / (h / 2)) ** 2 + ((xx - w / 2) / (w / 2)) ** 2 <= 1
            o[..., 0], o[..., 2] = 255, 255
            o[..., 3] = np.where(inside, 255, 0)
            self._obj.append((o, "things" if k < 2 else "other"))

    def objects(self, split):
        self.asked.add(split)
        return self._obj

    def backgrounds(self, split):
        self.asked.add(split)
        return self._bg


def _magenta_box(frame: np.ndarray):
    """The bounding box [x, y, w, h] of pixels where the object's alpha is at least a half,
    read from the colour: a magenta (255, 0, 255) object blended at alpha a over a grey v gives
    R = 255 a + (1 - a) v and G = (1 - a) v, so R - G = 255 a (up to uint8 rounding, which
    moves no box edge on these sequences)."""
    f = frame.astype(np.float64)
    m = (f[..., 0] - f[..., 1]) >= 127.5
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return np.array([cols[0], rows[0], cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]], float)


def test_photo_boxes_are_exact():
    lib = _Library()
    checked = 0
    for seed in range(40):
        seq = photo_sequence_from(np.random.default_rng(seed), lib.objects("x"), lib.backgrounds("x"),
                                  num_frames=12, size=(97, 131))
        assert seq.frames.shape == (12, 97, 131, 3) and seq.gt.shape == (12, 4)
        assert (seq.gt[:, 2:] > 0).all() and (seq.gt[:, :2] >= 0).all()
        assert (seq.gt[:, 0] + seq.gt[:, 2] <= 131).all() and (seq.gt[:, 1] + seq.gt[:, 3] <= 97).all()
        m = seq.meta
        if m["lookalike"] or m["occluded"] or m["blur"] or m["light"]:
            continue
        for i in range(12):
            np.testing.assert_array_equal(_magenta_box(seq.frames[i]), seq.gt[i])
        checked += 1
    assert checked >= 5


def test_photo_sequence_conditions_and_determinism():
    lib = _Library()
    metas = []
    for seed in range(60):
        a = photo_sequence_from(np.random.default_rng(seed), lib.objects("x"), lib.backgrounds("x"), 8, (64, 80))
        metas.append(a.meta)
    for key in ("lookalike", "occluded", "pan", "blur", "light"):
        share = np.mean([m[key] for m in metas])
        assert 0.05 < share < 0.95, (key, share)
    assert any(m["jumps"] for m in metas)
    a = photo_sequence_from(np.random.default_rng(3), lib.objects("x"), lib.backgrounds("x"), 8, (64, 80))
    b = photo_sequence_from(np.random.default_rng(3), lib.objects("x"), lib.backgrounds("x"), 8, (64, 80))
    g = photo_sequence_from(np.random.default_rng(3), lib.objects("x"), lib.backgrounds("x"), 8, (64, 80),
                            grey=True)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.gt, g.gt)
    assert (g.frames[..., 0] == g.frames[..., 1]).all() and (g.frames[..., 1] == g.frames[..., 2]).all()
    assert not (a.frames[..., 0] == a.frames[..., 1]).all()
    assert isinstance(a.text, str) and a.text


def test_photo_split_uses_its_own_photographs_and_sizes():
    lib = _Library()
    seqs = photo_split("test", num=4, num_frames=5, library=lib)
    assert lib.asked == {"test"}
    assert [s.name for s in seqs] == [f"photo-test-{i:03d}" for i in range(4)]
    assert all(s.frames.shape[1:3] in SPLIT_SIZES["test"] for s in seqs)
    again = photo_split("test", num=2, num_frames=5, library=lib, start=2)
    np.testing.assert_array_equal(again[0].frames, seqs[2].frames)
    grey = photo_split("test", num=1, num_frames=5, library=lib, grey=True)
    assert grey[0].name == "photo-test-000-grey"
    np.testing.assert_array_equal(grey[0].gt, seqs[0].gt)


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=(20, 80)), "at least 32x32"), (dict(num_frames=1), "num_frames"),
])
def test_photo_sequence_bad_input(kwargs, match):
    lib = _Library()
    args = dict(num_frames=5, size=(64, 80)) | kwargs
    with pytest.raises(ValueError, match=match):
        photo_sequence_from(np.random.default_rng(0), lib.objects("x"), lib.backgrounds("x"), **args)
    with pytest.raises(ValueError, match="at least one object"):
        photo_sequence_from(np.random.default_rng(0), [], lib.backgrounds("x"))
    with pytest.raises(ValueError, match="split must be one of"):
        photo_split("dev", library=lib)


# ------------------------------------------------------------------ the synthetic generator

def test_synthetic_colour_gives_nothing_away():
    """Pooled over the held-out sequences, no threshold on one channel (or on the largest)
    separates target pixels from the rest much better than chance; the generator before this
    had every target pixel >= 200 in one channel and the background <= 160 (accuracy 1)."""
    X, Y = [], []
    for s in synthetic_split("test", num=12, num_frames=2):
        f = s.frames[0]
        x, y, w, h = s.gt[0].astype(int)
        m = np.zeros(f.shape[:2], bool)
        m[y:y + h, x:x + w] = True
        X.append(f.reshape(-1, 3))
        Y.append(m.reshape(-1))
        sprite = f[y:y + h, x:x + w]
        assert sprite.min() >= 40 and sprite.max() <= 160
    X, Y = np.concatenate(X).astype(int), np.concatenate(Y)
    best = 0.0
    for v in (X[:, 0], X[:, 1], X[:, 2], X.max(1)):
        for t in range(256):
            p = v >= t
            acc = 0.5 * (p[Y].mean() + (~p[~Y]).mean())
            best = max(best, acc, 1 - acc)
    assert best < 0.8, best


# ------------------------------------------------------------------ augmentations

def test_photometric_augmentation():
    from fasttrack.trackers.detrack.train import photometric

    g = torch.Generator().manual_seed(0)
    z = torch.rand(2, 3, 16, 16, generator=g) * 255
    x = torch.rand(3, 33, 33, generator=g) * 255
    greys = 0
    for seed in range(40):
        z2, x2 = photometric(z, x, np.random.default_rng(seed))
        assert z2.shape == z.shape and x2.shape == x.shape
        assert z2.min() >= 0 and z2.max() <= 255 and not torch.equal(x2, x)
        grey = torch.allclose(x2[0], x2[1], atol=1e-3) and torch.allclose(z2[:, 0], z2[:, 2], atol=1e-3)
        greys += grey
        if grey:  # greyscale is joint: templates and search together
            assert torch.allclose(z2[:, 0], z2[:, 1], atol=1e-3)
    assert 2 <= greys <= 20
    z2, x2 = photometric(z, x, np.random.default_rng(0), grey=1.0, blur=1.0)
    assert torch.allclose(x2[0], x2[2], atol=1e-3)
    # the blur smooths: neighbouring pixels differ less than in the input
    assert (x2[:, 1:] - x2[:, :-1]).abs().mean() < 0.6 * (x[:, 1:] - x[:, :-1]).abs().mean()


def test_sample_batch_augment_off_keeps_the_stream():
    from fasttrack.trackers.detrack import DeTrack
    from fasttrack.trackers.detrack.train import sample_batch

    cfg = DeTrack.tiny().config
    seqs = synthetic_split("train", num=3, num_frames=6)
    a = sample_batch(seqs, 4, cfg, generator=np.random.default_rng(1))
    b = sample_batch(seqs, 4, cfg, generator=np.random.default_rng(1), augment=0.0)
    c = sample_batch(seqs, 4, cfg, generator=np.random.default_rng(1), augment=1.0)
    assert torch.equal(a["search"], b["search"]) and torch.equal(a["templates"], b["templates"])
    assert not torch.equal(a["search"], c["search"])
    with pytest.raises(ValueError, match="augment"):
        sample_batch(seqs, 4, cfg, augment=1.5)


# ------------------------------------------------------------------ plumbing

def test_eval_names():
    from fasttrack.commands.evaluate import parse_generated, parse_synthetic

    assert parse_generated("photos:test") == ("photos", "test", None, None, False)
    assert parse_generated("photos:val:3x20:grey") == ("photos", "val", 3, 20, True)
    assert parse_generated("photos:test:grey") == ("photos", "test", None, None, True)
    assert parse_synthetic("synthetic:val:48x60") == ("val", 48, 60)
    for bad in ("photos:dev", "photos:test:x", "synthetic:test:grey", "photos:test:3x1"):
        with pytest.raises(ValueError, match="DATASET"):
            parse_generated(bad) if not bad.startswith("synthetic") else parse_synthetic(bad)


def test_training_pool_mixes_photos(tmp_path, fake_apt, monkeypatch):
    from fasttrack.train.data import TrainingData, validation_sequences

    root = tmp_path / "lib"
    fetch_photos(root, ["mate-backgrounds", "tuxpaint-stamps-default"], progress=False)
    monkeypatch.setenv("FASTTRACK_PHOTOS", str(root))
    lib = PhotoLibrary.open()
    if not all(any(e["split"] == "train" and e["kind"] == k for e in lib.entries)
               for k in ("background", "object")):
        # the fake packages' pictures happen to hash outside "train": move them there
        for e in lib.entries:
            e["split"] = "train"
        lib.entries = lib.entries
        for e in lib.entries:
            src = next(root.glob(f"*/{Path(e['file']).name}"))
            (root / "train").mkdir(exist_ok=True)
            if src.parent.name != "train":
                src.rename(root / "train" / src.name)
            e["file"] = f"train/{src.name}"
        (root / "manifest.json").write_text(json.dumps(lib.entries))
    data = TrainingData(("synthetic", "photos"), seed=0, pool=12, frames=5)
    kinds = [s.name.startswith("photo") for s in data.sequences]
    assert 0 < sum(kinds) < 12 and "photo" in data.describe()
    only = TrainingData(("photos",), seed=0, pool=4, frames=5)
    assert all(s.name.startswith("photo") for s in only.sequences)
    assert [s.name for s in validation_sequences(4, 10)] == [f"val-{i:03d}" for i in range(4)]


def test_faint_objects_keep_a_box():
    """An object whose alpha never reaches one half (a glass, or a thin object shrunk to a few
    pixels and blurred) still gets a box (at half its peak alpha) inside the frame."""
    line = np.zeros((200, 30, 4), np.uint8)
    line[..., :3], line[..., 3] = 200, 100
    bg = [np.full((120, 160, 3), 90, np.uint8)]
    for seed in range(10):
        seq = photo_sequence_from(np.random.default_rng(seed), [(line, "tools")], bg, 6, (64, 80))
        assert (seq.gt[:, 2:] >= 1).all() and (seq.gt[:, :2] >= 0).all()
        assert (seq.gt[:, 0] + seq.gt[:, 2] <= 80).all() and (seq.gt[:, 1] + seq.gt[:, 3] <= 64).all()
