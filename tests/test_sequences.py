"""Sequence readers on tiny data sets written to tmp_path, error paths, and synthetic sequences."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fasttrack.data import (
    OTB_FRAME_RANGES,
    Sequence,
    load_folder,
    load_got10k,
    load_lasot,
    load_otb,
    open_sequences,
    read_boxes,
    synthetic_sequence,
)


def colour(i: int) -> np.ndarray:
    """Distinct (6, 8, 3) uint8 frame number i: a solid colour with a marker pixel."""
    img = np.zeros((6, 8, 3), np.uint8)
    img[:] = (10 * i + 5, 255 - 10 * i, 7 * i % 256)
    img[0, 0] = (1, 2, 3)
    return img


def write_frames(folder: Path, names) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    imgs = []
    for i, name in enumerate(names):
        imgs.append(colour(i))
        Image.fromarray(imgs[-1]).save(folder / name)
    return imgs


def write_boxes(path: Path, boxes, sep=","):
    path.write_text("".join(sep.join(f"{v:g}" for v in b) + "\n" for b in boxes))


BOXES = np.array([[1, 2, 3, 4], [1.5, 2.25, 3, 4], [0, 0, 5, 5], [2, 1, 2, 2], [3, 3, 1, 1]],
                 np.float32)


# ---------------------------------------------------------------- ground-truth text files

def test_read_boxes_delimiters(tmp_path):
    p = tmp_path / "gt.txt"
    p.write_text("1,2,3,4\n5\t6\t7\t8\n\n 9 10  11 12 \n13, 14,\t15 ,16,\nnan,NaN,1,1\n")
    got = read_boxes(p)
    assert got.dtype == np.float32 and got.shape == (5, 4)
    np.testing.assert_array_equal(got[:4], np.arange(1, 17).reshape(4, 4))
    assert np.isnan(got[4, :2]).all() and (got[4, 2:] == 1).all()


@pytest.mark.parametrize("text, line", [("1,2,3,4\n1,2,x,4\n", 2), ("1,2,3,4\n\n1,2,3\n", 3),
                                        ("1 2 3 4 5\n", 1)])
def test_read_boxes_malformed(tmp_path, text, line):
    p = tmp_path / "gt.txt"
    p.write_text(text)
    with pytest.raises(ValueError, match=rf"gt\.txt:{line}: expected 4 numbers"):
        read_boxes(p)


# ---------------------------------------------------------------- Sequence

def test_sequence_in_memory_frames():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    seq = Sequence("mem", [colour(0), gray], gt=[[0, 0, 1, 1], [1, 1, 2, 2]])
    assert len(seq) == 2 and seq.size == (6, 8) and seq.gt.dtype == np.float32
    np.testing.assert_array_equal(seq[0], colour(0))
    np.testing.assert_array_equal(seq[-1], np.repeat(gray[:, :, None], 3, 2))
    assert [f.shape for f in seq] == [(6, 8, 3), (3, 4, 3)]
    with pytest.raises(IndexError):
        seq[2]
    with pytest.raises(ValueError, match="frames must be uint8"):
        Sequence("bad", [np.zeros((2, 2, 3), np.float32)])[0]
    with pytest.raises(ValueError, match="gt has 1 boxes for 2 frames"):
        Sequence("mem", [colour(0), colour(1)], gt=[[0, 0, 1, 1]])
    with pytest.raises(ValueError, match=r"gt must have shape \(N, 4\)"):
        Sequence("mem", [colour(0)], gt=[[0, 0, 1]])


def test_sequence_eval_gt_marks_absent():
    seq = Sequence("s", [colour(0)] * 3, gt=BOXES[:3], absent=[0, 1, 0])
    np.testing.assert_array_equal(seq.gt, BOXES[:3])  # gt itself untouched
    assert np.isnan(seq.eval_gt[1]).all() and (seq.eval_gt[[0, 2]] == BOXES[[0, 2]]).all()


def test_unreadable_image_names_file(tmp_path):
    write_frames(tmp_path, ["00000001.png"])
    (tmp_path / "00000002.png").write_bytes(b"not an image")
    seq = load_folder(tmp_path)
    np.testing.assert_array_equal(seq[0], colour(0))
    with pytest.raises(ValueError, match=r"cannot read image .*00000002\.png: not an image file"):
        seq[1]
    (tmp_path / "00000002.png").unlink()  # gone after listing (a file removed mid-run)
    with pytest.raises(ValueError, match=r"cannot read image .*00000002\.png: no such file$"):
        seq[1]


def test_path_errors_name_the_kind(tmp_path):
    """Each reader says what is wrong with a path in the same words: "no such file", "is a
    folder", "no such folder", "is a file" (fasttrack.data.sequences.path_problem)."""
    from fasttrack.data import load_video, read_image
    from fasttrack.data.sequences import path_problem

    (tmp_path / "f.txt").write_text("1,2,3,4\n")
    assert path_problem(tmp_path / "f.txt", "file") is None and path_problem(tmp_path, "folder") is None
    with pytest.raises(ValueError, match=r"cannot read image .*gone\.png: no such file$"):
        read_image(tmp_path / "gone.png")
    with pytest.raises(ValueError, match=r"cannot read image .*: is a folder$"):
        read_image(tmp_path)
    with pytest.raises(ValueError, match=r"cannot read ground truth .*: is a folder$"):
        read_boxes(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"gone: no such folder$"):
        load_got10k(tmp_path / "gone")
    with pytest.raises(NotADirectoryError, match=r"f\.txt is a file; expected a folder$"):
        load_lasot(tmp_path / "f.txt")
    with pytest.raises(FileNotFoundError, match=r"gone: no such file or folder"):
        open_sequences(tmp_path / "gone")
    pytest.importorskip("av")
    with pytest.raises(ValueError, match=r"cannot read video .*: is a folder$"):
        load_video(tmp_path)


def test_load_folder_natural_order(tmp_path):
    imgs = write_frames(tmp_path / "clip", ["1.png", "2.png", "10.png"])
    (tmp_path / "clip" / "notes.txt").write_text("ignored")
    seq = load_folder(tmp_path / "clip")
    assert seq.name == "clip" and seq.gt is None and [p.name for p in seq.frames] == [
        "1.png", "2.png", "10.png"]
    np.testing.assert_array_equal(seq[2], imgs[2])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_folder(tmp_path / "empty")


# ---------------------------------------------------------------- GOT-10k

def make_got10k(root: Path):
    names = [f"{i:08d}.png" for i in range(1, 4)]
    imgs = write_frames(root / "val" / "GOT-10k_Val_000001", names)
    write_boxes(root / "val" / "GOT-10k_Val_000001" / "groundtruth.txt", BOXES[:3])
    (root / "val" / "GOT-10k_Val_000001" / "absence.label").write_text("0\n1\n0\n")
    write_frames(root / "val" / "GOT-10k_Val_000002", names)
    write_boxes(root / "val" / "GOT-10k_Val_000002" / "groundtruth.txt", BOXES[:1])  # test style
    return imgs


def test_load_got10k(tmp_path):
    imgs = make_got10k(tmp_path)
    seqs = load_got10k(tmp_path, split="val")
    assert [s.name for s in seqs] == ["GOT-10k_Val_000001", "GOT-10k_Val_000002"]
    a, b = seqs
    np.testing.assert_array_equal(a.gt, BOXES[:3])
    np.testing.assert_array_equal(a.absent, [False, True, False])
    for i in range(3):
        np.testing.assert_array_equal(a[i], imgs[i])
    np.testing.assert_array_equal(b.gt[0], BOXES[0])
    assert np.isnan(b.gt[1:]).all() and b.absent is None
    (tmp_path / "val" / "list.txt").write_text("GOT-10k_Val_000002\n")
    assert [s.name for s in load_got10k(tmp_path / "val")] == ["GOT-10k_Val_000002"]


def test_got10k_errors(tmp_path):
    make_got10k(tmp_path)
    d = tmp_path / "val" / "GOT-10k_Val_000001"
    write_boxes(d / "groundtruth.txt", BOXES[:2])
    with pytest.raises(ValueError, match=r"groundtruth\.txt has 2 boxes but there are 3 frames"):
        load_got10k(tmp_path, "val")
    write_boxes(d / "groundtruth.txt", BOXES[:3])
    (d / "absence.label").write_text("0\n0\n")
    with pytest.raises(ValueError, match=r"absence\.label has 2 flags"):
        load_got10k(tmp_path, "val")
    (d / "absence.label").unlink()
    (d / "groundtruth.txt").unlink()
    with pytest.raises(ValueError, match=r"missing ground truth file .*Val_000001.groundtruth\.txt"):
        load_got10k(tmp_path, "val")
    (tmp_path / "val" / "list.txt").write_text("nope\n")
    with pytest.raises(ValueError, match="names 'nope'"):
        load_got10k(tmp_path, "val")


# ---------------------------------------------------------------- LaSOT

def test_load_lasot(tmp_path):
    for cat, n in [("cat", 2), ("airplane", 1)]:
        for i in range(1, n + 1):
            d = tmp_path / cat / f"{cat}-{i}"
            write_frames(d / "img", [f"{k:08d}.png" for k in range(1, 4)])
            write_boxes(d / "groundtruth.txt", BOXES[:3] + i)
    seqs = load_lasot(tmp_path)
    assert [s.name for s in seqs] == ["airplane-1", "cat-1", "cat-2"]
    assert seqs[2].meta["category"] == "cat"
    np.testing.assert_array_equal(seqs[2].gt, BOXES[:3] + 2)
    np.testing.assert_array_equal(seqs[1][2], colour(2))
    (tmp_path / "cat" / "cat-2" / "groundtruth.txt").unlink()
    with pytest.raises(ValueError, match=r"missing ground truth file .*cat-2.groundtruth\.txt"):
        load_lasot(tmp_path)


# ---------------------------------------------------------------- OTB

def test_load_otb_quirks(tmp_path):
    imgs = write_frames(tmp_path / "Basket" / "img", [f"{k:04d}.png" for k in range(1, 6)])
    write_boxes(tmp_path / "Basket" / "groundtruth_rect.txt", BOXES, sep="\t")
    write_frames(tmp_path / "Jogging" / "img", [f"{k:04d}.png" for k in range(1, 6)])
    write_boxes(tmp_path / "Jogging" / "groundtruth_rect.1.txt", BOXES, sep=",")
    write_boxes(tmp_path / "Jogging" / "groundtruth_rect.2.txt", BOXES + 1, sep=" ")
    write_frames(tmp_path / "Human4" / "img", [f"{k:04d}.png" for k in range(1, 6)])
    (tmp_path / "Human4" / "groundtruth_rect.1.txt").write_text("\n")  # empty, as in OTB
    write_boxes(tmp_path / "Human4" / "groundtruth_rect.2.txt", BOXES)
    seqs = {s.name: s for s in load_otb(tmp_path)}
    assert sorted(seqs) == ["Basket", "Human4.2", "Jogging.1", "Jogging.2"]
    np.testing.assert_array_equal(seqs["Basket"].gt, BOXES)
    np.testing.assert_array_equal(seqs["Jogging.2"].gt, BOXES + 1)
    np.testing.assert_array_equal(seqs["Basket"][4], imgs[4])


def test_otb_frame_ranges(tmp_path):
    # Tiger1 (table: frames 6..354) with ground truth for all 354 frames: cut to the range.
    # The loader only lists images, so empty files stand in for the 354 frames.
    (tmp_path / "Tiger1" / "img").mkdir(parents=True)
    for k in range(1, 355):
        (tmp_path / "Tiger1" / "img" / f"{k:04d}.jpg").touch()
    gt = np.stack([np.arange(1, 355)] * 4, 1).astype(np.float32)
    write_boxes(tmp_path / "Tiger1" / "groundtruth_rect.txt", gt)
    # "Short" with an override 3..5 and ground truth listing only those 3 frames
    imgs = write_frames(tmp_path / "Short" / "img", [f"{k:04d}.png" for k in range(1, 6)])
    write_boxes(tmp_path / "Short" / "groundtruth_rect.txt", BOXES[:3])
    seqs = {s.name: s for s in load_otb(tmp_path, frame_ranges={"Short": (3, 5)})}
    assert OTB_FRAME_RANGES["Tiger1"] == (6, 354) and OTB_FRAME_RANGES["David"] == (300, 770)
    tiger = seqs["Tiger1"]
    assert len(tiger) == 349 and tiger.frames[0].name == "0006.jpg"
    np.testing.assert_array_equal(tiger.gt[:, 0], np.arange(6, 355))
    assert len(seqs["Short"]) == 3
    np.testing.assert_array_equal(seqs["Short"][0], imgs[2])
    np.testing.assert_array_equal(seqs["Short"].gt, BOXES[:3])
    with pytest.raises(ValueError, match=r"frames 3\.\.7 of Short expected"):
        load_otb(tmp_path, frame_ranges={"Short": (3, 7)})
    with pytest.raises(ValueError, match=r"groundtruth_rect\.txt has 3 boxes but there are 5"):
        load_otb(tmp_path, frame_ranges={"Short": (1, 5)})


def test_otb_errors(tmp_path):
    write_frames(tmp_path / "Seq" / "img", ["0001.png", "0002.png"])
    with pytest.raises(ValueError, match=r"missing ground truth file .*groundtruth_rect\.txt"):
        load_otb(tmp_path)
    (tmp_path / "Seq" / "groundtruth_rect.txt").write_text("1,2,3,4\n1;2;3;four\n")
    with pytest.raises(ValueError, match=r"groundtruth_rect\.txt:2: expected 4 numbers"):
        load_otb(tmp_path)


# ---------------------------------------------------------------- layout detection

def test_open_sequences_detects_layouts(tmp_path):
    make_got10k(tmp_path / "got")
    with pytest.raises(ValueError, match="looks like a GOT-10k root"):
        open_sequences(tmp_path / "got")
    assert len(open_sequences(tmp_path / "got" / "val")) == 2
    one = open_sequences(tmp_path / "got" / "val" / "GOT-10k_Val_000001")
    assert [s.name for s in one] == ["GOT-10k_Val_000001"] and one[0].absent is not None

    d = tmp_path / "lasot" / "cat" / "cat-1"
    write_frames(d / "img", ["00000001.png", "00000002.png"])
    write_boxes(d / "groundtruth.txt", BOXES[:2])
    for p in (tmp_path / "lasot", tmp_path / "lasot" / "cat", d):
        seqs = open_sequences(p)
        assert [s.name for s in seqs] == ["cat-1"] and seqs[0].meta["layout"] == "lasot"

    write_frames(tmp_path / "otb" / "Jog" / "img", ["0001.png", "0002.png"])
    write_boxes(tmp_path / "otb" / "Jog" / "groundtruth_rect.1.txt", BOXES[:2])
    write_boxes(tmp_path / "otb" / "Jog" / "groundtruth_rect.2.txt", BOXES[:2])
    for p in (tmp_path / "otb", tmp_path / "otb" / "Jog"):
        assert [s.name for s in open_sequences(p)] == ["Jog.1", "Jog.2"]

    write_frames(tmp_path / "clips" / "a", ["1.png"])
    write_frames(tmp_path / "clips" / "b", ["1.png", "2.png"])
    seqs = open_sequences(tmp_path / "clips")
    assert [(s.name, len(s), s.gt) for s in seqs] == [("a", 1, None), ("b", 2, None)]
    assert open_sequences(tmp_path / "clips" / "b")[0].gt is None

    (tmp_path / "nothing" / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="cannot detect the layout"):
        open_sequences(tmp_path / "nothing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a video file"):
        open_sequences(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError):
        open_sequences(tmp_path / "missing")


# ---------------------------------------------------------------- video

def test_load_video(tmp_path):
    av = pytest.importorskip("av")
    from fasttrack.data import load_video

    path = tmp_path / "clip.mkv"
    frames = [np.kron(colour(i), np.ones((2, 2, 1), np.uint8)) for i in range(5)]  # (12, 16, 3)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=10)  # lossless
        stream.width, stream.height, stream.pix_fmt = 16, 12, "bgr0"
        for f in frames:
            for pkt in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    seq = load_video(path, gt=np.tile(BOXES[:1], (5, 1)))
    assert seq.name == "clip" and len(seq) == 5 and seq.size == (12, 16)
    for i in [0, 1, 4, 2, 2, 3]:  # forwards, backwards (reopens), repeated
        np.testing.assert_array_equal(seq[i], frames[i])
    assert [s.name for s in open_sequences(path)] == ["clip"]
    write_boxes(tmp_path / "gt.txt", BOXES[:4])
    with pytest.raises(ValueError, match=r"gt\.txt has 4 boxes but video .*clip\.mkv has 5"):
        load_video(path, gt=tmp_path / "gt.txt")
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"cannot read video .*broken\.mp4"):
        load_video(tmp_path / "broken.mp4")


# ---------------------------------------------------------------- synthetic

def test_synthetic_deterministic():
    a = synthetic_sequence(8, seed=3, occlusion=True, scale_change=True)
    b = synthetic_sequence(8, seed=3, occlusion=True, scale_change=True)
    c = synthetic_sequence(8, seed=4, occlusion=True, scale_change=True)
    assert len(a) == 8 and a.size == (128, 160) and a.gt.dtype == np.float32
    np.testing.assert_array_equal(a.gt, b.gt)
    assert all(np.array_equal(a[i], b[i]) for i in range(8))
    assert not np.array_equal(a.gt, c.gt) and not np.array_equal(a[0], c[0])


@pytest.mark.parametrize("occlusion, scale_change", [(False, False), (True, True)])
def test_synthetic_boxes_are_exact(occlusion, scale_change):
    n = 24
    seq = synthetic_sequence(n, size=(64, 80), sprite_size=(12, 16), seed=1, occlusion=occlusion,
                             scale_change=scale_change)
    bg, occ = seq.meta["background"], seq.meta["occluder"]
    yy, xx = np.mgrid[0:64, 0:80]
    occluded_frames = 0
    for i in range(n):
        x, y, w, h = seq.gt[i]
        assert (x, y, w, h) == tuple(np.rint(seq.gt[i])) and x >= 0 and y >= 0
        assert x + w <= 80 and y + h <= 64
        box = (xx >= x) & (xx < x + w) & (yy >= y) & (yy < y + h)
        bar = np.zeros_like(box)
        if occ is not None:
            bar = (xx >= occ[i, 0]) & (xx < occ[i, 0] + occ[i, 2])
            occluded_frames += bool((box & bar).any())
            assert (box & ~bar).any()  # never fully hidden
        changed = (seq[i] != bg).any(-1)
        np.testing.assert_array_equal(changed & ~bar, box & ~bar)
        if not scale_change:  # the texture sits exactly in the box
            np.testing.assert_array_equal(seq[i][int(y):int(y + h), int(x):int(x + w)],
                                          seq.meta["sprite"])
    sizes = {tuple(b) for b in seq.gt[:, 2:]}
    if scale_change:
        assert len(sizes) > 3 and occluded_frames >= 1
        assert occ[n // 2, 2] == 8  # bar width = sprite width // 2
    else:
        assert sizes == {(16.0, 12.0)} and occ is None
    steps = np.abs(np.diff(seq.gt[:, :2], axis=0)).max()
    assert 0 < steps <= 8  # smooth motion


@pytest.mark.parametrize("kwargs, match", [
    ({"num_frames": 0}, "num_frames"), ({"size": (10,)}, "size"),
    ({"sprite_size": (100, 10)}, "sprite_size"), ({"sprite_size": (2.5, 10)}, "sprite_size"),
])
def test_synthetic_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthetic_sequence(**kwargs)
