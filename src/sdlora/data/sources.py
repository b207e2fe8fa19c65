"""Scanning image sources: one pass over each folder, every file read once.

A source folder may mix: sidecar captions (`img.png` + `img.txt`, extension configurable), a
`metadata.jsonl` / `metadata.csv` (Hugging Face imagefolder: `file_name` + `text`) in any folder,
and kohya repeat folders (`10_sks person/`: 10 repeats, caption `sks person`). Nested folders are
walked; hidden files and folders (`.x`, `__MACOSX`) are ignored. Files are read under the policy of
`sdlora.data.files` (regular files only, byte limits) and every image is fully decoded once here.

Caption precedence for an image: sidecar file > metadata row > kohya folder name > source prompt >
none (""). A sidecar that exists but cannot be read is noted, and the next caption in that order is
used. Repeats: source.repeats times the kohya folder's count. A folder whose number is over
MAX_FOLDER_REPEATS (`20240101_trip`: a date, not 20 million repeats) is an ordinary folder, noted.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from sdlora.data.captions import read_caption_file
from sdlora.data.files import FileRefused, name_text, shown
from sdlora.data.images import IMAGE_EXTENSIONS, BadImage, ImageInfo, probe_image, read_image_file
from sdlora.data.metadata import read_metadata
from sdlora.errors import SdloraError

log = logging.getLogger("sdlora.data")

KOHYA_FOLDER = re.compile(r"^([1-9]\d*)_(.+)$")
MAX_FOLDER_REPEATS = 1000  # kohya users write 1-100; larger numbers are dates, ids or typos


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
    subset: str = ""  # printable name of its kohya folder, else of its source folder (tag frequencies)
    alpha: bool = False  # the file has transparency (its alpha is the loss mask with data.masks = "alpha")
    mask: str | None = None  # its mask file (data.masks = "folder"; set by masks.find_masks)
    mask_digest: str = ""  # sha1 of the mask file's bytes (latent cache key)

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
    folders: dict[str, dict] = field(default_factory=dict)  # kohya folder (printable) -> repeats, caption, images


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


class Kohya(NamedTuple):
    repeats: int
    caption: str
    folder: Path


def kohya_name(name: str) -> tuple[int, str] | None:
    """`10_sks person` -> (10, "sks person"); None for any other name. The number is not bounded here
    (huge ones are capped at 10**18 so that any name converts)."""
    match = KOHYA_FOLDER.match(name)
    if not match:
        return None
    digits = match.group(1)
    return (int(digits) if len(digits) <= 18 else 10**18), name_text(match.group(2).strip())


def kohya_folder(root: Path, image: Path) -> Kohya | None:
    """The nearest `N_tokens` folder between `root` (inclusive) and the image, N <= MAX_FOLDER_REPEATS."""
    folder = image.parent
    while True:
        parsed = kohya_name(folder.name)
        if parsed and parsed[0] <= MAX_FOLDER_REPEATS:
            return Kohya(parsed[0], parsed[1], folder)
        if folder == root or folder.parent == folder:
            return None
        folder = folder.parent


def _not_repeats(root: Path, image: Path) -> set[Path]:
    """Folders between `root` and the image named like `N_name` with N over MAX_FOLDER_REPEATS."""
    out, folder = set(), image.parent
    while True:
        parsed = kohya_name(folder.name)
        if parsed and parsed[0] > MAX_FOLDER_REPEATS:
            out.add(folder)
        if folder == root or folder.parent == folder:
            return out
        folder = folder.parent


def _check(path: Path, max_pixels: int) -> tuple[Path, str | None, ImageInfo | None, BadImage | None]:
    """Read one file once: hash its bytes and decode it. Never raises for a bad file."""
    try:
        data = read_image_file(path, max_pixels)
        info = probe_image(data, max_pixels)
    except BadImage as exc:
        return path, None, None, exc
    except Exception as exc:  # a decoder bug on a hostile file is still just a bad file
        return path, None, None, BadImage("corrupt", f"{type(exc).__name__}: {exc}")
    return path, hashlib.sha1(data).hexdigest(), info, None


def _caption_for(path: Path, folder: Kohya | None, source, metadata: dict[Path, str], notes: list[str]
                 ) -> tuple[str, str, bool]:
    """(caption, where it came from, whether a caption file/row was empty), by the precedence above."""
    sidecar = path.with_suffix(source.caption_extension)
    if os.path.lexists(sidecar):
        try:
            text = read_caption_file(sidecar)
            return text, "sidecar", not text
        except FileRefused as exc:
            notes.append(f"caption file {shown(sidecar)} is not used: {exc.reason}")
    if path in metadata:
        return metadata[path], "metadata", not metadata[path]
    if folder is not None:
        return folder.caption, "folder", False
    if source.prompt:
        return source.prompt, "prompt", False
    return "", "none", False


def _add_record(scan: SourceScan, root: Path, source, path: Path, digest: str, info: ImageInfo,
                metadata: dict[Path, str]) -> None:
    folder = kohya_folder(root, path)
    caption, origin, empty = _caption_for(path, folder, source, metadata, scan.notes)
    subset = shown(folder.folder.name if folder else root.name)
    if folder is not None:
        rel = folder.folder.relative_to(root)
        entry = scan.folders.setdefault(shown(root.name if rel == Path(".") else rel),
                                        {"repeats": folder.repeats, "caption": folder.caption, "images": 0})
        entry["images"] += 1
    scan.records.append(ImageRecord(
        path=str(path), source=scan.index, width=info.width, height=info.height, digest=digest, caption=caption,
        caption_from=origin, repeats=source.repeats * (folder.repeats if folder else 1),
        is_class=source.role == "class", caption_empty_file=empty, subset=subset, alpha=info.alpha))


def scan_source(source, index: int, *, max_pixels: int, threads: int = 4) -> SourceScan:
    """Scan one SourceConfig: usable images with captions and repeats, and skipped files with reasons."""
    root = Path(source.path).expanduser()
    if not root.is_dir():
        raise SdloraError(f"data.sources[{index}].path: {shown(root)} is not a folder")
    if not source.caption_extension.startswith("."):
        raise SdloraError(f"data.sources[{index}].caption_extension: {source.caption_extension!r} must start with '.'")
    scan = SourceScan(index=index, path=str(root))
    metadata = read_metadata(root, scan.notes)
    paths = list_images(root)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # hashing and file reads release the GIL
        results = list(pool.map(lambda p: _check(p, max_pixels), paths))
    for path, digest, info, bad in results:
        if bad is not None:
            scan.skipped.append(Skipped(str(path), bad.code, bad.reason))
        else:
            _add_record(scan, root, source, path, digest, info, metadata)
    ignored = sorted({f for p in paths for f in _not_repeats(root, p)})
    scan.notes += [f"folder {shown(f)}: {f.name.split('_')[0]} is not read as a repeat count (more than "
                   f"{MAX_FOLDER_REPEATS}; a date?): an ordinary folder, no repeats or caption from its name; "
                   f"rename it `N_name` with N at most {MAX_FOLDER_REPEATS} to repeat its images" for f in ignored]
    missing = sorted(shown(p) for p in metadata if not p.is_file())
    if missing:
        scan.notes.append(f"{len(missing)} metadata rows name files that do not exist (e.g. {missing[0]})")
    return scan


def scan_sources(sources, *, max_pixels: int, threads: int = 4) -> list[SourceScan]:
    """Scan every source; each bad file is logged once with its reason."""
    scans = [scan_source(s, i, max_pixels=max_pixels, threads=threads) for i, s in enumerate(sources)]
    for scan in scans:
        for skip in scan.skipped:
            log.warning("skipping %s: %s", shown(skip.path), skip.reason)
        for note in scan.notes:
            log.warning("%s: %s", shown(scan.path), note)
    return scans
