"""The one policy for reading user files (images, captions, metadata): what may be opened, how much
of it is read, and how its name is shown (built on sdlora.fileio's rule: only regular files).

- Only regular files are read. A path is checked with `os.stat` (symlinks resolved) before it is
  opened, so a FIFO, socket, device (`/dev/zero`, `/dev/tty`) or folder is never opened; it is then
  opened with O_NONBLOCK (a FIFO swapped in after the check cannot block) and checked again with
  `fstat` on the open descriptor.
- Every read has a byte limit, checked from the size on disk first and again while reading (a file
  that grows is cut off, never read to the end of memory).
- JSON from a file is parsed with every way it can fail turned into one `ValueError` (deep nesting
  raises RecursionError, huge integers a plain ValueError).
- File names that are not valid UTF-8 reach Python as surrogate escapes; they can be opened, but
  never printed, logged or written as is: `shown(path)` is the one printable form.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from sdlora.fileio import file_kind

MiB = 1 << 20
MAX_CAPTION_BYTES = 1 * MiB  # CLIP reads 77 tokens; a megabyte of text is not a caption
MAX_METADATA_BYTES = 256 * MiB  # metadata.jsonl / metadata.csv of a whole dataset
IMAGE_BYTES_PER_PIXEL = 8  # 16-bit RGBA, uncompressed: no honest image file holds more per pixel
IMAGE_BYTES_SLACK = 16 * MiB  # headers, EXIF, ICC profiles, embedded thumbnails

# Refusal codes (stable strings for reports) -> what a user reads.
REFUSALS = {
    "not_regular": "not a regular file (only regular files are read)",
    "file_too_big": "file too large",
    "unreadable": "cannot be read",
}


class FileRefused(Exception):
    """A file the reading policy will not (or cannot) read; `code` is a key of REFUSALS."""

    def __init__(self, code: str, detail: str = ""):
        self.code, self.detail = code, detail
        self.reason = REFUSALS[code] + (f": {detail}" if detail else "")
        super().__init__(self.reason)

    def __reduce__(self):
        return type(self), (self.code, self.detail)


def image_byte_limit(max_pixels: int) -> int:
    """The largest image file worth reading under a pixel limit."""
    return IMAGE_BYTES_PER_PIXEL * max_pixels + IMAGE_BYTES_SLACK


def shown(path: str | os.PathLike) -> str:
    """`path` as printable text: bytes that are not UTF-8 become `\\xNN` escapes (never raises)."""
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def name_text(name: str) -> str:
    """A file or folder name as text to train on (a caption): bytes that are not UTF-8 become U+FFFD."""
    return os.fsencode(name).decode("utf-8", errors="replace")


def clean_text(text: str) -> str:
    """`text` without lone surrogates (JSON's `\\udcff` escapes make them), each replaced by `?`."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _check(st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused("not_regular", f"this is a {file_kind(st.st_mode)}")
    if st.st_size > limit:
        raise FileRefused("file_too_big", f"{st.st_size:,} bytes > {limit:,}")


def read_regular(path: str | os.PathLike, limit: int) -> bytes:
    """All bytes of the regular file `path`, at most `limit` of them; FileRefused otherwise."""
    try:
        _check(os.stat(path), limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileRefused:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise FileRefused("unreadable", getattr(exc, "strerror", None) or str(exc)) from None
    try:
        _check(os.fstat(fd), limit)  # the file we opened, not the one we looked at
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(limit + 1 - size, 16 * MiB))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused("file_too_big", f"more than {limit:,} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise FileRefused("unreadable", exc.strerror or str(exc)) from None
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike, limit: int) -> str:
    """A text file as str: UTF-8 (BOM tolerated, undecodable bytes replaced)."""
    return read_regular(path, limit).decode("utf-8-sig", errors="replace")


def parse_json(text: str):
    """json.loads with every failure a ValueError whose message is one short line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ValueError("not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ValueError(f"not valid JSON ({str(exc).splitlines()[0][:120]})") from None


def relative_inside(folder: Path, name: str) -> Path | None:
    """`folder / name` when `name` is a relative path that stays inside `folder`, else None."""
    if not name or "\x00" in name:
        return None
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        return None
    return folder / rel
