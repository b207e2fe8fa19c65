"""The one way sdlora writes a file (atomically) and the one rule for which files it reads.

Writing: the data goes to a hidden temporary file in the target's folder (`.<name>.<random>.tmp`),
is flushed and fsync-ed, renamed over the target (os.replace is atomic on POSIX and Windows) and
the folder is fsync-ed, so a crash or kill at any moment leaves the old file or the new one, never
a torn one. Files and folders are created with the user's normal permissions (0666 / 0777 less the
umask), as `open()` would, not the 0600 / 0700 of tempfile.mkstemp / mkdtemp.

Reading: only regular files (or links to them) are opened; a FIFO would block forever, a device
like /dev/zero never ends. regular_file() refuses them with one line naming the path (for files a
library opens itself: models, LoRA files); sdlora.data.files reads user data under the same rule
(is_regular, file_kind) with byte limits added.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

from sdlora.errors import SdloraError


def file_kind(mode: int) -> str:
    """What a file of this st_mode is, in words ("regular file", "FIFO", "character device", ...)."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "folder"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def is_regular(path: str | os.PathLike) -> bool:
    """True for a regular file (after symlinks); False for anything else, missing or not."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """`path` as a Path when it is a regular file (symlinks followed); SdloraError naming it otherwise."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SdloraError(f"{path}: {what} not found") from None
    except (OSError, ValueError) as err:  # permission, a name too long, a NUL byte
        raise SdloraError(f"{path}: cannot read this {what} ({getattr(err, 'strerror', None) or err})") from None
    if stat.S_ISDIR(mode):
        raise SdloraError(f"{path}: is a folder, expected a {what}")
    if not stat.S_ISREG(mode):
        raise SdloraError(f"{path}: not a regular file (this is a {file_kind(mode)}); give a {what} on disk")
    return path


def fsync_dir(path: str | os.PathLike) -> None:
    """Make renames inside `path` durable (POSIX; a no-op elsewhere)."""
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def make_temp_dir(parent: str | os.PathLike, name: str) -> Path:
    """A new hidden folder `.<name>.<random>.tmp` in `parent`, with the user's normal permissions."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = _temp_name(parent / name)
        try:
            folder.mkdir(mode=0o777)  # the umask applies, as for any folder the user makes
            return folder
        except FileExistsError:
            continue


def _create_temp(path: Path) -> Path:
    while True:
        tmp = _temp_name(path)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_path(p) as tmp: writer(tmp)` -> `p` replaced by what was written to `tmp`, atomically.

    For writers that want a file name (safetensors.save_file); the temporary file exists (empty)
    when the block starts. On any exception the temporary file is removed and `p` is untouched."""
    path = Path(path)
    if path.is_dir():
        raise SdloraError(f"{path}: is a folder; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    mode = stat.S_IMODE(tmp.stat().st_mode)  # 0666 less the umask
    try:
        yield tmp
        os.chmod(tmp, mode)  # a writer may have re-created the file 0600 (safetensors does)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write `path` by calling write(file) on a temporary file beside it, then rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_safetensors(path: str | os.PathLike, tensors: Mapping, metadata: Mapping[str, str] | None = None) -> Path:
    """safetensors.torch.save_file, atomically (no in-memory copy of the whole file)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata) if metadata else None)
    return Path(path)
