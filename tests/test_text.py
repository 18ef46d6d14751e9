"""Language descriptions: the readers' ``Sequence.text`` (LaSOT nlp.txt, TNL2K language.txt,
OTB99-LANG query files) on tiny data sets in tmp_path, ``describe_target``'s words against the
definitions, and the synthetic sequences' descriptions (frames unchanged by them)."""

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from test_sequences import BOXES, write_boxes, write_frames

from fasttrack.data import load_lasot, load_otb, load_tnl2k, open_sequences
from fasttrack.data.synthetic import (HELD_OUT_WRONG_TEXT, random_synthetic_sequence,
                                      synthetic_sequence, synthetic_split)
from fasttrack.data.text import DESCRIPTION_WORDS, describe_target

# ---------------------------------------------------------------- readers

def lasot_sequence(root: Path, cat: str, i: int, nlp: bytes | None):
    d = root / cat / f"{cat}-{i}"
    write_frames(d / "img", [f"{k:08d}.png" for k in range(1, 4)])
    write_boxes(d / "groundtruth.txt", BOXES[:3])
    if nlp is not None:
        (d / "nlp.txt").write_bytes(nlp)
    return d


def test_lasot_nlp(tmp_path):
    d = lasot_sequence(tmp_path, "cat", 1, b"  white cat\n  lying on   the sofa\t\n")
    lasot_sequence(tmp_path, "cat", 2, b" \n\t \n")  # whitespace only
    lasot_sequence(tmp_path, "cat", 3, None)  # missing
    lasot_sequence(tmp_path, "cup", 1, b"\xef\xbb\xbfcaf\xe9 cup\n")  # BOM, not UTF-8 inside
    seqs = {s.name: s for s in load_lasot(tmp_path)}
    assert seqs["cat-1"].text == "white cat lying on the sofa"
    assert seqs["cat-2"].text is None and seqs["cat-3"].text is None
    assert seqs["cup-1"].text == "caf\ufffd cup"
    assert open_sequences(d)[0].text == "white cat lying on the sofa"
    assert [s.text for s in open_sequences(tmp_path / "cat")] == [
        "white cat lying on the sofa", None, None]
    (d / "nlp.txt").unlink()
    (d / "nlp.txt").mkdir()  # present but unreadable: an error naming it
    with pytest.raises(ValueError, match=r"cannot read description .*nlp\.txt: is a folder"):
        load_lasot(tmp_path)


def tnl2k_sequence(root: Path, name: str, language: str | None, n: int = 3):
    d = root / name
    imgs = write_frames(d / "imgs", [f"{k:05d}.png" for k in range(1, n + 1)])
    write_boxes(d / "groundtruth.txt", BOXES[:n])
    if language is not None:
        (d / "language.txt").write_text(language, encoding="utf-8")
    return d, imgs


def test_tnl2k(tmp_path):
    root = tmp_path / "TNL2K_test"
    a, imgs = tnl2k_sequence(root, "advSamp_Baseball_game_002-Done", "the baseball\nin the air\n")
    tnl2k_sequence(root, "Bike_man_black", None, n=2)
    tnl2k_sequence(root, "Cat_run", "")
    seqs = load_tnl2k(root)
    assert [(s.name, len(s), s.text) for s in seqs] == [
        ("advSamp_Baseball_game_002-Done", 3, "the baseball in the air"),
        ("Bike_man_black", 2, None), ("Cat_run", 3, None)]
    assert all(s.meta["layout"] == "tnl2k" for s in seqs)
    np.testing.assert_array_equal(seqs[0].gt, BOXES[:3])
    np.testing.assert_array_equal(seqs[0][2], imgs[2])
    one = load_tnl2k(a)  # a sequence folder itself
    assert [(s.name, s.text) for s in one] == [(a.name, "the baseball in the air")]
    # detected by open_sequences, as a root and as one sequence
    assert [(s.name, s.text, s.meta["layout"]) for s in open_sequences(root)] == [
        (s.name, s.text, "tnl2k") for s in seqs]
    got = open_sequences(a)
    assert [(s.name, s.text) for s in got] == [(a.name, "the baseball in the air")]
    np.testing.assert_array_equal(got[0].gt, BOXES[:3])
    (root / "Cat_run" / "groundtruth.txt").unlink()
    with pytest.raises(ValueError, match=r"missing ground truth file .*Cat_run.groundtruth\.txt"):
        load_tnl2k(root)


def test_got10k_and_folders_have_no_text(tmp_path):
    d = tmp_path / "GOT-10k_Val_000001"
    write_frames(d, ["00000001.png", "00000002.png"])
    write_boxes(d / "groundtruth.txt", BOXES[:2])
    (d / "language.txt").write_text("not a GOT-10k file")
    assert open_sequences(d)[0].text is None and open_sequences(d)[0].gt is not None


def otb_sequence(root: Path, name: str, targets: int = 1, language: str | None = None):
    d = root / name
    write_frames(d / "img", [f"{k:04d}.png" for k in range(1, 4)])
    if targets == 1:
        write_boxes(d / "groundtruth_rect.txt", BOXES[:3])
    else:
        for k in range(1, targets + 1):
            write_boxes(d / f"groundtruth_rect.{k}.txt", BOXES[:3] + k)
    if language is not None:
        (d / "language.txt").write_text(language)
    return d


def test_otb_lang(tmp_path):
    root = tmp_path / "OTB100"
    otb_sequence(root, "Basket")
    otb_sequence(root, "Jogging-1")  # OTB-Lang's folder for target 1 of Jogging
    otb_sequence(root, "Skating2", targets=2)  # Skating2.1, Skating2.2
    otb_sequence(root, "Car4", language="white car\n")  # the in-folder fallback
    otb_sequence(root, "Biker")  # no description anywhere
    query = tmp_path / "OTB_query_test"  # official layout: beside the videos
    query.mkdir()
    (query / "basket.txt").write_text("player in white on the right\n")  # case-insensitive
    (query / "Jogging.txt").write_text("woman in white jogging\n")
    (query / "Skating2-1.txt").write_text("man skating\n")
    (query / "Skating2-2.txt").write_text(" woman   skating ")
    train = root / "OTB_query_train"  # inside the root works too
    train.mkdir()
    (train / "Biker.txt").write_text("\n")  # blank: None
    expected = {"Basket": "player in white on the right", "Jogging-1": "woman in white jogging",
                "Skating2.1": "man skating", "Skating2.2": "woman skating", "Car4": "white car",
                "Biker": None}
    assert {s.name: s.text for s in load_otb(root)} == expected
    assert {s.name: s.text for s in open_sequences(root)} == expected
    assert open_sequences(root / "Jogging-1")[0].text == "woman in white jogging"
    assert [s.text for s in open_sequences(root / "Skating2")] == ["man skating", "woman skating"]

    # an explicit folder replaces the automatic search; names without a file keep the fallback
    mine = tmp_path / "elsewhere" / "my_queries"
    mine.mkdir(parents=True)
    (mine / "BASKET.txt").write_text("the ball")
    (mine / "Skating2.txt").write_text("a skater")  # Skating2.k -> Skating2
    got = {s.name: s.text for s in load_otb(root, language=mine)}
    assert got == {"Basket": "the ball", "Jogging-1": None, "Skating2.1": "a skater",
                   "Skating2.2": "a skater", "Car4": "white car", "Biker": None}
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_otb(root, language=tmp_path / "missing")
    # without any query folder, only the in-folder files
    other = tmp_path / "sep" / "plain"  # no OTB_query folder in it or beside it
    otb_sequence(other, "Basket")
    otb_sequence(other, "Car4", language="white car")
    assert {s.name: s.text for s in load_otb(other)} == {"Basket": None, "Car4": "white car"}


# ---------------------------------------------------------------- describe_target

COLOURS, SIZES, SHAPES = ("red", "green", "blue"), ("small", "medium-sized", "large"), (
    "wide", "tall", "square")


def expected_words(sprite: np.ndarray, H: int, W: int) -> dict:
    """The words by the definitions of fasttrack.data.text's docstring, computed here."""
    h, w = sprite.shape[:2]
    # the colour is the channel with the highest mean (a synthetic sprite's palette leans to it)
    means = [float(sprite[..., c].astype(np.float64).mean()) for c in range(3)]
    dominant = [c for c in range(3) if means[c] == max(means)]
    assert len(dominant) == 1
    r = math.sqrt(h * w / (H * W))
    size = "small" if r < 0.155 else ("large" if r > 0.215 else "medium-sized")
    shape = "wide" if w / h > 1.3 else ("tall" if h / w > 1.3 else "square")
    return {"colour": COLOURS[dominant[0]], "size": size, "shape": shape}


def read_words(text: str) -> dict:
    """The attribute words of a description; each attribute must be named exactly once."""
    tokens = text.replace(",", " ").split()
    got = {}
    for attr, values in DESCRIPTION_WORDS.items():
        found = [t for t in tokens if t in values]
        assert len(found) == 1, (text, attr)
        got[attr] = found[0]
    return got


def make_sprite(h: int, w: int, channel: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.where(((yy // 2 + xx // 2) % 2)[..., None] == 1, 110, 20).astype(np.uint8)
    img = np.repeat(img[..., :1], 3, axis=2)
    img[..., channel] = 200 + (yy + xx) % 56
    return img


def test_vocabulary():
    assert DESCRIPTION_WORDS == {"colour": COLOURS, "size": SIZES, "shape": SHAPES}


@pytest.mark.parametrize("h, w, H, W, channel, words", [
    (10, 20, 100, 100, 0, ("red", "small", "wide")),  # r 0.141, aspect 2
    (24, 16, 100, 120, 1, ("green", "medium-sized", "tall")),  # r 0.179, aspect 0.67
    (30, 30, 100, 100, 2, ("blue", "large", "square")),  # r 0.3
    (12, 15, 100, 100, 1, ("green", "small", "square")),  # aspect 1.25
    (40, 20, 120, 150, 0, ("red", "medium-sized", "tall")),  # r 0.211
    (30, 45, 120, 150, 2, ("blue", "large", "wide")),  # r 0.274, aspect 1.5
])
def test_describe_target_words(h, w, H, W, channel, words):
    sprite = make_sprite(h, w, channel)
    want = expected_words(sprite, H, W)
    assert (want["colour"], want["size"], want["shape"]) == words
    text = describe_target(sprite, (H, W))
    assert text == describe_target(sprite, (H, W)) and read_words(text) == want
    for seed in range(20):  # every template names the same attributes
        assert read_words(describe_target(sprite, (H, W), np.random.default_rng(seed))) == want


def test_describe_synthetic_sprites():
    for seed in range(12):
        seq = synthetic_sequence(2, seed=seed)
        want = expected_words(seq.meta["sprite"], *seq.size)
        assert read_words(seq.text) == want
        assert seq.text == describe_target(seq.meta["sprite"], seq.size,
                                           np.random.default_rng([seed, 7]))


def test_describe_target_wrong():
    sprite, size = make_sprite(24, 16, 1), (100, 120)
    want = expected_words(sprite, *size)
    changed = set()
    for seed in range(300):
        right = describe_target(sprite, size, np.random.default_rng(seed), wrong=0.0)
        assert read_words(right) == want
        wrong = describe_target(sprite, size, np.random.default_rng(seed), wrong=1.0)
        got = read_words(wrong)
        diff = [a for a in want if got[a] != want[a]]
        assert len(diff) == 1, (right, wrong)
        changed.add((diff[0], got[diff[0]]))
        # same generator state: same template and noun, one word replaced
        a, b = right.split(), wrong.split()
        assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1
    # every attribute, and every wrong value of it, occurs
    assert changed == {(attr, v) for attr, values in DESCRIPTION_WORDS.items()
                       for v in values if v != want[attr]}
    shares = np.mean([read_words(describe_target(sprite, size, np.random.default_rng(s),
                                                 wrong=0.3)) != want for s in range(1000)])
    assert 0.25 < shares < 0.35


@pytest.mark.parametrize("kwargs, match", [
    ({"sprite": np.zeros((4, 4, 3), np.float32)}, "sprite"),
    ({"sprite": np.zeros((4, 4), np.uint8)}, "sprite"),
    ({"sprite": np.zeros((0, 4, 3), np.uint8)}, "sprite"),
    ({"frame_size": (0, 10)}, "frame_size"), ({"frame_size": (10,)}, "frame_size"),
    ({"frame_size": (10.5, 10)}, "frame_size"), ({"frame_size": "ab"}, "frame_size"),
    ({"wrong": -0.1}, "wrong"), ({"wrong": 1.5}, "wrong"), ({"wrong": float("nan")}, "wrong"),
    ({"wrong": "x"}, "wrong"), ({"rng": 42}, "rng"), ({"rng": None, "wrong": 0.5}, "rng"),
])
def test_describe_target_bad_arguments(kwargs, match):
    args = {"sprite": make_sprite(8, 8, 0), "frame_size": (64, 64),
            "rng": np.random.default_rng(0), "wrong": 0.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        describe_target(**args)


# ---------------------------------------------------------------- synthetic sequences

def digest(seqs) -> str:
    h = hashlib.sha256()
    for s in seqs:
        for f in s:
            h.update(repr(f.shape).encode())
            h.update(np.ascontiguousarray(f).tobytes())
        h.update(np.ascontiguousarray(s.gt).tobytes())
    return h.hexdigest()


def test_synthetic_frames_unchanged_by_text():
    """Regression lock, not a result: these digests (this file's `digest`) were computed from
    fasttrack/data/synthetic.py once its sprites took the backgrounds' colour range (the
    earlier lock, from commit 442fa4b, held the sprites with one channel >= 200); the
    descriptions draw from generators of their own, so frames and boxes must not move."""
    assert digest(synthetic_split("test", num=3, num_frames=5)) == (
        "67c2c21ba591d567d98fbdfd2f4b558bba76f708906a19b3dd4fd5adf02686b1")
    assert digest([synthetic_sequence(seed=3)]) == (
        "30e8d71efc66739673242ebd83e4011f9dbd26af8182d1e1410cc27bd822c4ea")
    assert digest(synthetic_split("val", num=4, num_frames=3)) == (
        "38bec7e19d0a1c0de6575ef703d0629efb0440dbee854d20fbf2df54a6aaa41e")


def is_wrong(seq) -> bool:
    return read_words(seq.text) != expected_words(seq.meta["sprite"], *seq.size)


def test_split_descriptions():
    test = synthetic_split("test", num_frames=2)
    assert len(test) == 12 and all(isinstance(s.text, str) and s.text.strip() for s in test)
    # the description depends on the split and index only, not on the number of frames
    assert [s.text for s in test] == [s.text for s in synthetic_split("test", num_frames=3)]
    assert [s.text for s in test[4:6]] == [
        s.text for s in synthetic_split("test", num=2, num_frames=2, start=4)]
    assert not any(is_wrong(s) for s in synthetic_split("train", num=24, num_frames=2))
    # held-out: wrong with probability HELD_OUT_WRONG_TEXT by a seeded draw; some, not all
    assert HELD_OUT_WRONG_TEXT == 0.2
    val = synthetic_split("val", num=48, num_frames=2)
    share = np.mean([is_wrong(s) for s in val])
    assert 0 < share < 1


def test_random_synthetic_sequence_wrong_text():
    a_rng, b_rng = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(20):
        a = random_synthetic_sequence(a_rng, 3)
        b = random_synthetic_sequence(b_rng, 3, wrong_text=1.0)
        np.testing.assert_array_equal(a.gt, b.gt)
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        assert not is_wrong(a) and is_wrong(b)
        # the right description with one word replaced
        assert sum(x != y for x, y in zip(a.text.split(), b.text.split())) == 1
    assert a_rng.random() == b_rng.random()  # the caller's stream is where it would be
    c = random_synthetic_sequence(np.random.default_rng(9), 3, wrong_text=0.0)
    assert c.text == random_synthetic_sequence(np.random.default_rng(9), 3).text
    with pytest.raises(ValueError, match="wrong_text"):
        random_synthetic_sequence(np.random.default_rng(0), 3, wrong_text=1.5)
