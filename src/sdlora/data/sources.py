"""Scanning image sources: one pass over each folder, every file read once.

A source folder may mix: sidecar captions (`img.png` + `img.txt`, extension configurable), a
`metadata.jsonl` / `metadata.csv` (Hugging Face imagefolder: `file_name` + `text`) in any folder,
and kohya repeat folders (`10_sks person/`: 10 repeats, caption `sks person`). Nested folders are
walked; hidden files and folders (`.x`, `__MACOSX`) are ignored.

Caption precedence for an image: sidecar file > metadata row > kohya folder name > source prompt >
none (""). Repeats: source.repeats times the kohya folder's count.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sdlora.data.captions import read_caption_file
from sdlora.data.images import IMAGE_EXTENSIONS, BadImage, probe_image
from sdlora.data.metadata import read_metadata
from sdlora.errors import SdloraError

log = logging.getLogger("sdlora.data")

KOHYA_FOLDER = re.compile(r"^([1-9]\d*)_(.+)$")


@dataclass
class ImageRecord:
    """One usable image as found on disk (before buckets and repeats)."""

    path: str
    source: int  # index into DataConfig.sources
    width: int  # displayed size (EXIF orientation applied)
    height: int
    digest: str  # sha1 of the file's bytes: duplicates, cache keys
    caption: str  # raw caption, without the source's prefix/suffix
    caption_from: str  # "sidecar", "metadata", "folder", "prompt" or "none"
    repeats: int = 1
    is_class: bool = False
    caption_empty_file: bool = False  # a sidecar/metadata caption that is empty

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass
class Skipped:
    path: str
    code: str  # a key of images.SKIP_CODES
    reason: str


@dataclass
class SourceScan:
    """The result of scanning one source."""

    index: int
    path: str
    records: list[ImageRecord] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # problems that are not about one image (metadata rows)


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def list_images(root: Path) -> list[Path]:
    """Every file with an image extension under `root` (sorted, hidden entries skipped)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        found.extend(Path(dirpath) / f for f in sorted(filenames)
                     if not _is_hidden(f) and Path(f).suffix.lower() in IMAGE_EXTENSIONS)
    return found


def kohya_folder(root: Path, image: Path) -> tuple[int, str] | None:
    """(repeats, class tokens) of the nearest `N_tokens` folder between `root` (inclusive) and the image."""
    folder = image.parent
    while True:
        match = KOHYA_FOLDER.match(folder.name)
        if match:
            return int(match.group(1)), match.group(2).strip()
        if folder == root or folder.parent == folder:
            return None
        folder = folder.parent


def _check(path: Path, max_pixels: int) -> tuple[Path, str | None, tuple[int, int] | None, BadImage | None]:
    """Read one file once: hash its bytes and probe its header. Never raises for a bad file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return path, None, None, BadImage("unreadable", exc.strerror or str(exc))
    try:
        info = probe_image(data, max_pixels)
    except BadImage as exc:
        return path, None, None, exc
    except Exception as exc:  # a decoder bug on a hostile file is still just a bad file
        return path, None, None, BadImage("corrupt", f"{type(exc).__name__}: {exc}")
    return path, hashlib.sha1(data).hexdigest(), (info.width, info.height), None


def _caption_for(path: Path, folder: tuple[int, str] | None, source, metadata: dict[Path, str]
                 ) -> tuple[str, str, bool]:
    """(caption, where it came from, whether a caption file/row was empty), by the precedence above."""
    sidecar = path.with_suffix(source.caption_extension)
    if sidecar.is_file():
        try:
            text = read_caption_file(sidecar)
            return text, "sidecar", not text
        except OSError:
            pass
    if path in metadata:
        return metadata[path], "metadata", not metadata[path]
    if folder is not None:
        return folder[1], "folder", False
    if source.prompt:
        return source.prompt, "prompt", False
    return "", "none", False


def scan_source(source, index: int, *, max_pixels: int, threads: int = 4) -> SourceScan:
    """Scan one SourceConfig: usable images with captions and repeats, and skipped files with reasons."""
    root = Path(source.path).expanduser()
    if not root.is_dir():
        raise SdloraError(f"data.sources[{index}].path: {root} is not a folder")
    if not source.caption_extension.startswith("."):
        raise SdloraError(f"data.sources[{index}].caption_extension: {source.caption_extension!r} must start with '.'")
    scan = SourceScan(index=index, path=str(root))
    metadata = read_metadata(root, scan.notes)
    paths = list_images(root)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # hashing and file reads release the GIL
        results = list(pool.map(lambda p: _check(p, max_pixels), paths))
    for path, digest, size, bad in results:
        if bad is not None:
            scan.skipped.append(Skipped(str(path), bad.code, bad.reason))
            continue
        folder = kohya_folder(root, path)
        caption, origin, empty = _caption_for(path, folder, source, metadata)
        scan.records.append(ImageRecord(
            path=str(path), source=index, width=size[0], height=size[1], digest=digest, caption=caption,
            caption_from=origin, repeats=source.repeats * (folder[0] if folder else 1),
            is_class=source.role == "class", caption_empty_file=empty))
    listed = {p for p in metadata}
    missing = sorted(str(p) for p in listed if not p.is_file())
    if missing:
        scan.notes.append(f"{len(missing)} metadata rows name files that do not exist (e.g. {missing[0]})")
    return scan


def scan_sources(sources, *, max_pixels: int, threads: int = 4) -> list[SourceScan]:
    """Scan every source; each bad file is logged once with its reason."""
    scans = [scan_source(s, i, max_pixels=max_pixels, threads=threads) for i, s in enumerate(sources)]
    for scan in scans:
        for skip in scan.skipped:
            log.warning("skipping %s: %s", skip.path, skip.reason)
        for note in scan.notes:
            log.warning("%s: %s", scan.path, note)
    return scans
