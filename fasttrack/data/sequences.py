"""Tracking sequences and readers of the GOT-10k, LaSOT, TNL2K and OTB layouts and of image folders.

A :class:`Sequence` holds frame sources (image paths, in-memory arrays, or a lazy video reader)
and loads frames only when indexed. Frames come back as RGB HWC uint8 numpy arrays; ground truth
is an (N, 4) float32 array of ``[x, y, w, h]`` boxes (0-based pixels, DESIGN.md section 3).
Images are read with Pillow.

Language descriptions of the target (``Sequence.text``) come from the data sets that ship them:
LaSOT's ``nlp.txt``, TNL2K's ``language.txt`` and OTB99-LANG's ``OTB_query_{train,test}/<Seq>.txt``
(see :func:`load_otb`). A missing or blank description is None, never an error; a description is
read as UTF-8 (undecodable bytes replaced) with its whitespace collapsed to single spaces.

Errors (all ``ValueError`` naming the file, and the line for ground-truth syntax): an image that
cannot be read (raised when the frame is accessed), missing ground truth where the layout requires
it, ground truth whose length disagrees with the frame count, a malformed ground-truth line. A
path that does not exist or is of the wrong kind is named with :func:`path_problem`'s words
("no such file", "is a folder", "no such folder", "is a file"); a missing folder or data set
path is a ``FileNotFoundError``, a file where a folder belongs a ``NotADirectoryError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = [
    "Sequence", "IMAGE_EXTS", "read_image", "read_boxes", "list_images", "load_folder",
    "load_got10k", "load_lasot", "load_otb", "load_tnl2k", "OTB_FRAME_RANGES", "open_sequences",
    "VIDEO_EXTS", "path_problem", "read_description",
]

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                        ".flv"})


def path_problem(path, want: str) -> str | None:
    """What keeps `path` from being an existing `want` ("file" or "folder"), in the words every
    file-or-folder error of fasttrack uses: "no such file", "is a folder", "no such folder",
    "is a file", "is not a regular file or folder"; None when it is one."""
    if want not in ("file", "folder"):
        raise ValueError(f"want must be 'file' or 'folder', got {want!r}")
    p = Path(path)
    if not p.exists():
        return f"no such {want}"
    if p.is_dir():
        return None if want == "folder" else "is a folder"
    if p.is_file():
        return None if want == "file" else "is a file"
    return "is not a regular file or folder"


def read_image(path) -> np.ndarray:
    """Read an image file as RGB. Returns (H, W, 3) uint8; ValueError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except UnidentifiedImageError:  # its message repeats the path
        raise ValueError(f"cannot read image {path}: not an image file Pillow can decode") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        # the path itself is checked only here: frames are read often, and fail rarely
        raise ValueError(f"cannot read image {path}: {path_problem(path, 'file') or exc}") from None


def _as_rgb(arr: np.ndarray, where: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        raise ValueError(f"{where}: frames must be uint8, got {a.dtype}")
    if a.ndim == 2:
        return np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim == 3 and a.shape[2] == 3:
        return a
    if a.ndim == 3 and a.shape[2] == 4:
        return a[:, :, :3]
    raise ValueError(f"{where}: frames must be (H, W, 3) RGB, got shape {a.shape}")


@dataclass(eq=False)
class Sequence:
    """One tracking sequence.

    Attributes:
        name: sequence name.
        frames: per-frame sources: image paths (str / Path), (H, W, 3) uint8 arrays, or any object
            with ``__len__`` and ``__getitem__`` returning such arrays (a video reader, an (N, H, W,
            3) array).
        gt: (N, 4) float32 boxes [x, y, w, h] or None. Rows may be NaN where unknown.
        absent: (N,) bool, True where the data set marks the target absent (GOT-10k), or None.
        meta: free-form information from the reader (e.g. paths, generator parameters).
        text: natural-language description of the target (str, one line, whitespace collapsed)
            from the data set's language file (LaSOT, TNL2K, OTB99-LANG) or the synthetic
            generator, or None where the data set has none (GOT-10k, image folders, videos).
            It describes the target as first seen and may be stale or wrong later on.
    """

    name: str
    frames: Any
    gt: np.ndarray | None = None
    absent: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    text: str | None = None
    _size: tuple[int, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        n = len(self.frames)
        if self.gt is not None:
            gt = np.asarray(self.gt, dtype=np.float32)
            if gt.ndim != 2 or gt.shape[1] != 4:
                raise ValueError(f"sequence {self.name!r}: gt must have shape (N, 4), got {gt.shape}")
            if len(gt) != n:
                raise ValueError(f"sequence {self.name!r}: gt has {len(gt)} boxes for {n} frames")
            self.gt = gt
        if self.absent is not None:
            absent = np.asarray(self.absent, dtype=bool).reshape(-1)
            if len(absent) != n:
                raise ValueError(f"sequence {self.name!r}: absent has {len(absent)} flags for "
                                 f"{n} frames")
            self.absent = absent

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        """Frame ``i`` (negative indices count from the end) as (H, W, 3) uint8 RGB."""
        n = len(self.frames)
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"frame index must be an int, got {type(i).__name__}")
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for sequence {self.name!r} of {n} frames")
        src = self.frames[int(i) % n]
        if isinstance(src, (str, Path)):
            return read_image(src)
        return _as_rgb(src, f"sequence {self.name!r} frame {i}")

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames, read from the first frame."""
        if self._size is None:
            if len(self) == 0:
                raise ValueError(f"sequence {self.name!r} has no frames")
            self._size = tuple(self[0].shape[:2])
        return self._size

    @property
    def eval_gt(self) -> np.ndarray | None:
        """(N, 4) float32 copy of gt with NaN rows where ``absent`` is True (for the metrics)."""
        if self.gt is None:
            return None
        gt = self.gt.copy()
        if self.absent is not None:
            gt[self.absent] = np.nan
        return gt


_SEP = re.compile(r"[,;\s]+")


def read_boxes(path) -> np.ndarray:
    """Read one box per line: 4 numbers separated by commas, tabs or spaces (blank lines skipped).

    Returns:
        (N, 4) float32. "nan" entries are kept as NaN.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = path_problem(path, "file") or exc
        raise ValueError(f"cannot read ground truth {path}: {why}") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = [t for t in _SEP.split(line.strip()) if t]
        if not tokens:
            continue
        try:
            if len(tokens) != 4:
                raise ValueError
            rows.append([float(t) for t in tokens])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: expected 4 numbers [x, y, w, h] separated by "
                             f"commas, tabs or spaces, got {line.strip()!r}") from None
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def read_description(path) -> str | None:
    """A language file's text as one line: UTF-8 (a leading byte-order mark dropped, undecodable
    bytes replaced), whitespace and newlines collapsed to single spaces. None when the file does
    not exist or holds only whitespace; ValueError naming the file when it exists but cannot be
    read (e.g. it is a folder)."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read description {path}: {path_problem(path, 'file') or exc}") \
            from None
    # utf-8-sig: description files written on Windows often start with a byte-order mark
    return " ".join(raw.decode("utf-8-sig", errors="replace").split()) or None


def _natural_key(p: Path):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def list_images(folder) -> list[Path]:
    """Image files directly in ``folder`` (by extension), in natural (numeric-aware) order."""
    folder = Path(folder)
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS),
                  key=_natural_key)


def _require_dir(path) -> Path:
    path = Path(path)
    problem = path_problem(path, "folder")
    if problem == "no such folder":
        raise FileNotFoundError(f"{path}: no such folder")
    if problem:
        raise NotADirectoryError(f"{path} {problem}; expected a folder")
    return path


def _require_gt(path: Path) -> np.ndarray:
    if not path.exists():
        raise ValueError(f"missing ground truth file {path}")
    return read_boxes(path)  # names a folder in its place


def _check_len(gt: np.ndarray, n: int, path: Path):
    if len(gt) != n:
        raise ValueError(f"ground truth {path} has {len(gt)} boxes but there are {n} frames")


def load_folder(path, name: str | None = None) -> Sequence:
    """A folder of images (sorted naturally) as one sequence without ground truth."""
    path = _require_dir(path)
    frames = list_images(path)
    if not frames:
        raise ValueError(f"no image files ({', '.join(sorted(IMAGE_EXTS))}) in {path}")
    return Sequence(name or path.name, frames, meta={"path": str(path)})


def _got10k_sequence(d: Path) -> Sequence:
    frames = list_images(d)
    if not frames:
        raise ValueError(f"no image files in GOT-10k sequence folder {d}")
    gt_path = d / "groundtruth.txt"
    gt = _require_gt(gt_path)
    if len(gt) == 1 and len(frames) > 1:
        # test-split style: only the first box is given; the other frames are unknown (NaN)
        gt = np.concatenate([gt, np.full((len(frames) - 1, 4), np.nan, np.float32)])
    _check_len(gt, len(frames), gt_path)
    absent = None
    absent_path = d / "absence.label"
    if absent_path.is_file():
        lines = [s.strip() for s in absent_path.read_text().splitlines() if s.strip()]
        try:
            absent = np.array([int(float(s)) != 0 for s in lines], dtype=bool)
        except ValueError:
            raise ValueError(f"{absent_path}: expected one 0/1 flag per line") from None
        if len(absent) != len(frames):
            raise ValueError(f"{absent_path} has {len(absent)} flags but there are "
                             f"{len(frames)} frames")
    return Sequence(d.name, frames, gt, absent, meta={"path": str(d), "layout": "got10k"})


def load_got10k(root, split: str | None = None) -> list[Sequence]:
    """GOT-10k: ``root[/split]/<seq>/{00000001.jpg, ..., groundtruth.txt[, absence.label]}``.

    Sequences are the names in ``list.txt`` when present, else every subfolder holding images.
    A ground truth with a single box (test split) gives NaN boxes for the other frames. Frames
    flagged in ``absence.label`` are marked in ``Sequence.absent`` (see ``Sequence.eval_gt``).
    """
    root = _require_dir(Path(root) / split if split else root)
    listing = root / "list.txt"
    if listing.is_file():
        dirs = [root / s.strip() for s in listing.read_text().splitlines() if s.strip()]
        for d in dirs:
            problem = path_problem(d, "folder")
            if problem:
                raise ValueError(f"{listing} names {d.name!r} but {d}: {problem}")
    else:
        dirs = sorted((d for d in root.iterdir() if d.is_dir() and list_images(d)),
                      key=_natural_key)
    return [_got10k_sequence(d) for d in dirs]


def _lasot_sequence(d: Path) -> Sequence:
    frames = list_images(d / "img")
    if not frames:
        raise ValueError(f"no image files in LaSOT folder {d / 'img'}")
    gt_path = d / "groundtruth.txt"
    gt = _require_gt(gt_path)
    _check_len(gt, len(frames), gt_path)
    return Sequence(d.name, frames, gt, meta={"path": str(d), "layout": "lasot",
                                              "category": d.parent.name},
                    text=read_description(d / "nlp.txt"))


def load_lasot(root) -> list[Sequence]:
    """LaSOT: ``root/<category>/<category>-<i>/{img/00000001.jpg, ..., groundtruth.txt[,
    nlp.txt]}``; ``nlp.txt`` (one sentence) becomes ``Sequence.text``."""
    root = _require_dir(root)
    seqs = []
    for cat in sorted((c for c in root.iterdir() if c.is_dir()), key=_natural_key):
        for d in sorted((d for d in cat.iterdir() if (d / "img").is_dir()), key=_natural_key):
            seqs.append(_lasot_sequence(d))
    return seqs


def _is_tnl2k_dir(d: Path) -> bool:
    return (d / "imgs").is_dir() and (d / "groundtruth.txt").is_file()


def _tnl2k_sequence(d: Path) -> Sequence:
    frames = list_images(d / "imgs")
    if not frames:
        raise ValueError(f"no image files in TNL2K folder {d / 'imgs'}")
    gt_path = d / "groundtruth.txt"
    gt = _require_gt(gt_path)
    _check_len(gt, len(frames), gt_path)
    return Sequence(d.name, frames, gt, meta={"path": str(d), "layout": "tnl2k"},
                    text=read_description(d / "language.txt"))


def load_tnl2k(root) -> list[Sequence]:
    """TNL2K: ``root/<seq>/{imgs/00001.png, ..., groundtruth.txt[, language.txt]}``.

    ``root`` may also be one sequence folder. Sequences are the subfolders holding ``imgs/``
    (natural order; one without ``groundtruth.txt`` is an error); ``language.txt`` becomes
    ``Sequence.text`` (None when missing or blank).
    """
    root = _require_dir(root)
    if (root / "imgs").is_dir():
        return [_tnl2k_sequence(root)]
    dirs = sorted((d for d in root.iterdir() if (d / "imgs").is_dir()), key=_natural_key)
    return [_tnl2k_sequence(d) for d in dirs]


# OTB sequences whose evaluated frames are a sub-range of img/ (1-based, inclusive), from the
# benchmark's configSeqs: David and the BlurCars start late, Tiger1 skips its first 5 frames
# (as pytracking's initOmit), Diving / Football1 / Freeman3 / Freeman4 hold extra images.
OTB_FRAME_RANGES: dict[str, tuple[int, int]] = {
    "David": (300, 770), "Tiger1": (6, 354), "BlurCar1": (247, 988), "BlurCar3": (3, 359),
    "BlurCar4": (18, 397), "Diving": (1, 215), "Football1": (1, 74), "Freeman3": (1, 460),
    "Freeman4": (1, 283),
}

_OTB_GT = re.compile(r"^groundtruth_rect(?:\.(\d+))?\.txt$")


def _frame_number(p: Path) -> int:
    m = re.search(r"(\d+)(?!.*\d)", p.stem)
    if m is None:
        raise ValueError(f"OTB image name without a frame number: {p}")
    return int(m.group(1))


# OTB99-LANG (Li et al. 2017) ships one description per sequence in folders beside the videos
_OTB_QUERY_DIRS = ("OTB_query_test", "OTB_query_train")


def _otb_language_files(root: Path, language) -> dict[str, Path]:
    """Lower-case file stem -> description file: the ``<Seq>.txt`` files of the folder
    `language`, or, when it is None, of the OTB_query folders found in root and beside it
    (first found wins on a name in several)."""
    if language is not None:
        folders = [_require_dir(language)]
    else:
        folders = [b / q for b in (root, root.parent) for q in _OTB_QUERY_DIRS]
        folders = [f for f in folders if f.is_dir()]
    files: dict[str, Path] = {}
    for f in folders:
        for p in sorted(f.iterdir(), key=_natural_key):
            if p.suffix.lower() == ".txt" and p.is_file():
                files.setdefault(p.stem.lower(), p)
    return files


def _otb_text(d: Path, name: str, idx: str | None, files: Mapping[str, Path]) -> str | None:
    """The description of OTB sequence `name` (folder `d`, target `idx` of several or None)."""
    # OTB-Lang names the targets of a multi-target video "Jogging-1" (a folder of its own in the
    # OTB100 download): try the exact name, the "-k" form of "Seq.k", the folder name, and the
    # folder name without a "-<k>" suffix
    keys = [name, f"{d.name}-{idx}" if idx else None, d.name, re.sub(r"-\d+$", "", d.name)]
    for key in keys:
        if key and key.lower() in files:
            text = read_description(files[key.lower()])
            if text is not None:
                return text
    return read_description(d / "language.txt")


def _otb_sequences(d: Path, ranges: Mapping[str, tuple[int, int]],
                   texts: Mapping[str, Path] | None = None) -> list[Sequence]:
    gt_files = sorted((p for p in d.iterdir() if _OTB_GT.match(p.name)), key=_natural_key)
    if not gt_files:
        raise ValueError(f"missing ground truth file {d / 'groundtruth_rect.txt'}")
    images = list_images(d / "img")
    if not images:
        raise ValueError(f"no image files in OTB folder {d / 'img'}")
    seqs = []
    for gt_path in gt_files:
        gt = read_boxes(gt_path)
        if len(gt) == 0:
            continue  # OTB ships empty files (e.g. Human4/groundtruth_rect.1.txt)
        idx = _OTB_GT.match(gt_path.name).group(1)
        name = d.name if idx is None else f"{d.name}.{idx}"
        frames = images
        rng = ranges.get(name, ranges.get(d.name))
        if rng is not None:
            start, end = int(rng[0]), int(rng[1])
            frames = [p for p in images if start <= _frame_number(p) <= end]
            numbers = [_frame_number(p) for p in frames]
            if numbers != list(range(start, end + 1)):
                missing = sorted(set(range(start, end + 1)) - set(numbers))
                raise ValueError(f"{d / 'img'}: frames {start}..{end} of {name} expected; "
                                 f"missing or duplicated frame numbers, e.g. {missing[:3]}")
            if len(gt) != len(frames) and len(gt) >= end:
                gt = gt[start - 1:end]  # the ground truth also covers frames before `start`
        _check_len(gt, len(frames), gt_path)
        seqs.append(Sequence(name, frames, gt, meta={"path": str(d), "layout": "otb",
                                                     "frame_range": rng},
                             text=_otb_text(d, name, idx, texts or {})))
    return seqs


def load_otb(root, frame_ranges: Mapping[str, tuple[int, int]] | None = None,
             language=None) -> list[Sequence]:
    """OTB: ``root/<Seq>/{img/0001.jpg, ..., groundtruth_rect.txt}``, with the OTB99-LANG
    descriptions where present.

    Quirks handled: boxes separated by commas, tabs or spaces; several targets as
    ``groundtruth_rect.1.txt``, ``.2.txt`` (sequences ``Seq.1``, ``Seq.2``; empty files skipped);
    frame sub-ranges of :data:`OTB_FRAME_RANGES`, which ``frame_ranges`` (name -> (first, last),
    1-based inclusive frame numbers as in the image names; keyed by ``Seq`` or ``Seq.k``)
    extends or overrides. Within a range, the ground truth may list either the range's frames
    or all frames from frame 1 (then it is cut to the range).

    Descriptions (``Sequence.text``): OTB99-LANG's official layout keeps one ``<Seq>.txt`` per
    sequence in ``OTB_query_train/`` and ``OTB_query_test/``, apart from the videos. `language`
    names such a folder; when it is None, ``root/OTB_query_test``, ``root/OTB_query_train``,
    ``root/../OTB_query_test`` and ``root/../OTB_query_train`` are searched. A file matches a
    sequence by name, case-insensitively, as ``Seq.k``, ``Seq-k``, ``Seq`` or (folder
    ``Jogging-1``) the name without its ``-k`` suffix; without a match, ``<Seq>/language.txt``
    is used; else the text is None.
    """
    root = _require_dir(root)
    ranges = {**OTB_FRAME_RANGES, **(frame_ranges or {})}
    texts = _otb_language_files(root, language)
    seqs = []
    for d in sorted((d for d in root.iterdir() if (d / "img").is_dir()), key=_natural_key):
        seqs.extend(_otb_sequences(d, ranges, texts))
    return seqs


def _is_otb_dir(d: Path) -> bool:
    return (d / "img").is_dir() and any(_OTB_GT.match(p.name) for p in d.iterdir())


def open_sequences(path) -> list[Sequence]:
    """Open a video file, a sequence folder or a data set folder, detecting the layout.

    In order: a video file (by suffix, :data:`VIDEO_EXTS`); a single sequence folder (OTB:
    ``img/`` + ``groundtruth_rect*.txt``; LaSOT: ``img/`` + ``groundtruth.txt``; GOT-10k: images +
    ``groundtruth.txt``; otherwise images only, no ground truth; TNL2K: ``imgs/`` +
    ``groundtruth.txt``); a data set folder whose subfolders are OTB sequences, LaSOT sequences
    (a LaSOT category), GOT-10k sequences (some with ``groundtruth.txt``, or a ``list.txt``),
    image folders without ground truth, TNL2K sequences, or LaSOT categories; a folder of video
    files. Descriptions (``Sequence.text``) are read as the ``load_*`` readers read them.

    Returns:
        list of :class:`Sequence`.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder (expected a video file or a folder)")
    if p.is_file():
        if p.suffix.lower() in VIDEO_EXTS:
            from .video import load_video
            return [load_video(p)]
        raise ValueError(f"{p} is not a video file ({', '.join(sorted(VIDEO_EXTS))}) "
                         "nor a folder")
    p = _require_dir(p)
    if _is_otb_dir(p):  # descriptions as load_otb(p.parent) finds them
        return _otb_sequences(p, OTB_FRAME_RANGES, _otb_language_files(p.parent, None))
    if (p / "img").is_dir() and (p / "groundtruth.txt").is_file():
        return [_lasot_sequence(p)]
    if list_images(p):
        return [_got10k_sequence(p) if (p / "groundtruth.txt").is_file() else load_folder(p)]
    # TNL2K after the layouts with images in the folder itself (a folder with frames of its own
    # stays GOT-10k / plain), before the subfolder scan (which would take imgs/ as a plain folder)
    if _is_tnl2k_dir(p):
        return [_tnl2k_sequence(p)]
    subdirs = sorted((d for d in p.iterdir() if d.is_dir()), key=_natural_key)
    if any(_is_otb_dir(d) for d in subdirs):
        return load_otb(p)
    lasot = [d for d in subdirs if (d / "img").is_dir() and (d / "groundtruth.txt").is_file()]
    if lasot:
        return [_lasot_sequence(d) for d in lasot]
    image_dirs = [d for d in subdirs if list_images(d)]
    if (p / "list.txt").is_file() or any((d / "groundtruth.txt").is_file() for d in image_dirs):
        return load_got10k(p)
    if image_dirs:
        return [load_folder(d) for d in image_dirs]
    # a TNL2K root: checked after every subfolder layout that opened before TNL2K was known
    tnl2k = [d for d in subdirs if _is_tnl2k_dir(d)]
    if tnl2k:
        return [_tnl2k_sequence(d) for d in tnl2k]
    if any((c / "img").is_dir() for d in subdirs for c in d.iterdir() if c.is_dir()):
        return load_lasot(p)
    splits = [s for s in ("train", "val", "test") if (p / s).is_dir()]
    if splits:
        raise ValueError(f"{p} looks like a GOT-10k root: open {p / splits[0]} or call "
                         f"load_got10k({str(p)!r}, split={splits[0]!r})")
    videos = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in VIDEO_EXTS),
                    key=_natural_key)
    if videos:
        from .video import load_video
        return [load_video(v) for v in videos]
    raise ValueError(f"cannot detect the layout of {p}: no images, video files, or GOT-10k / "
                     "LaSOT / OTB / TNL2K sequence folders found")
