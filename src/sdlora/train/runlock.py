"""One run per run folder: an exclusive lock on OUT/.sdlora.lock holding the owner's pid.

The lock is an fcntl.flock on the file, so the kernel releases it when its process dies however it
dies; the pid written into the file only makes messages useful ("in use by pid 1234") and tells a
lock left by a dead process ("taking over") from a live one. Where fcntl does not exist (Windows)
the file is created with O_EXCL and a stale one is recognised by its dead pid.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from sdlora.errors import SdloraError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE = ".sdlora.lock"
log = logging.getLogger("sdlora.train")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


class RunLock:
    """`with RunLock(run_dir):` or acquire()/release(). A second holder gets a one-line SdloraError."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            previous = _read_pid(self.path) if self.path.exists() else 0
            self._fd = self._lock_flock() if fcntl is not None else self._lock_exclusive()
            os.ftruncate(self._fd, 0)
            os.write(self._fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            raise SdloraError(f"{self.path.parent}: cannot use this run folder ({exc.strerror or exc}); "
                              "choose a writable --output") from None
        if previous and previous != os.getpid():
            log.warning("taking over the lock of %s left by process %d, which is no longer running",
                        self.path.parent, previous)
        return self

    def _busy(self) -> SdloraError:
        pid = _read_pid(self.path)
        who = f"process {pid}" if pid else "another process"
        return SdloraError(f"{self.path.parent} is in use by another sdlora run ({who}); wait for it to finish, "
                           "or train into another --output")

    def _lock_flock(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
            try:  # the holder before us may have removed the file between our open and our lock
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)

    def _lock_exclusive(self) -> int:  # pragma: no cover - Windows
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            if pid_alive(_read_pid(self.path)):
                raise self._busy() from None
            self.path.unlink(missing_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)  # before unlocking: a waiter then sees a new inode and retries
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
