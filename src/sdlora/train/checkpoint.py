"""Atomic files, the run folder's checkpoint layout, training-state save/resume, keep-last-K.

    OUT/checkpoints/step-000200/{<name>.safetensors, state.pt}

Every file is written to a temporary name in the same folder, flushed, fsync-ed and renamed over
the target (os.replace is atomic on POSIX and Windows), and a checkpoint folder is assembled under
a hidden temporary name and renamed into place last. A crash or kill at any moment therefore
leaves either the previous good file/checkpoint or the new one, never a torn one; leftovers of an
interrupted save are hidden `.tmp` names that `find_checkpoints` ignores and the next save removes.
Files and folders get the user's normal permissions (0666 / 0777 less the umask), like any other
output, not mkstemp's private 0600 / 0700. A save that fails (disk full, folder read-only) raises a
one-line SdloraError and leaves the previous checkpoints as they were.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch

from sdlora.errors import SdloraError

STATE_FILE = "state.pt"
CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"step-(\d+)")
STATE_VERSION = 1


# ----------------------------------------------------------------------------- atomic files

def _fsync_dir(path: Path) -> None:
    if os.name == "posix":  # directory fsync makes the rename itself durable
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write `path` by calling write(file) on a temp file beside it, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: str | Path, obj) -> Path:
    """torch.save into memory first: torch's own writer turns a failed write (disk full) into a vague
    RuntimeError, a plain file write raises the OSError that says what happened."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getbuffer())


# ----------------------------------------------------------------------------- checkpoint folders

@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:06d}"


def find_checkpoints(run_dir: str | Path) -> list[Checkpoint]:
    """Complete checkpoints of a run (those holding a state file), oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    found = []
    for child in root.iterdir() if root.is_dir() else []:
        match = _STEP_DIR.fullmatch(child.name)
        if match and child.is_dir():
            found.append(Checkpoint(int(match.group(1)), child))
    return sorted(found, key=lambda c: c.step)


def write_checkpoint(run_dir: str | Path, step: int, write: Callable[[Path], None]) -> Checkpoint:
    """Create checkpoints/step-N atomically; write(folder) fills the (temporary) folder.

    The folder is filled under a hidden temporary name and renamed into place when complete;
    an existing checkpoint of the same step is replaced only after the new one is complete.
    """
    final = checkpoint_dir(run_dir, step)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(final.parent)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        os.chmod(staging, 0o777 & ~_umask())
    except OSError as exc:
        raise save_error(final, exc) from None
    try:
        write(staging)
        _swap_in(staging, final)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise save_error(final, exc) from None
        raise
    _fsync_dir(final.parent)
    return Checkpoint(step, final)


def save_error(final: Path, exc: OSError) -> SdloraError:
    """The one line for a checkpoint that could not be written (ENOSPC, EFBIG, EACCES, EROFS...)."""
    return SdloraError(f"{final}: could not save the checkpoint ({exc.strerror or exc}); the earlier checkpoints "
                       "are kept: free some space (or make the folder writable) and continue with --resume latest")


def _swap_in(staging: Path, final: Path) -> None:
    """Rename the complete staging folder to `final`; an existing `final` is replaced only then."""
    if not final.exists():
        os.replace(staging, final)
        return
    old = final.with_name(f".{final.name}.old.tmp")
    os.replace(final, old)
    try:
        os.replace(staging, final)
    except BaseException:
        os.replace(old, final)  # put the good one back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove_leftovers(root: Path) -> None:
    """Delete hidden temporaries left by a save that was killed."""
    for child in root.glob(".*.tmp"):
        kept = root / child.name[1:-len(".old.tmp")] if child.name.endswith(".old.tmp") else None
        if kept is not None and not kept.exists():  # killed between the two renames of _swap_in
            os.replace(child, kept)
            continue
        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


def prune(run_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (keep_last <= 0 keeps all); returns the deleted."""
    checkpoints = find_checkpoints(run_dir)
    doomed = [c.path for c in checkpoints[:-keep_last]] if keep_last > 0 else []
    for path in doomed:
        shutil.rmtree(path)
    return doomed


# ----------------------------------------------------------------------------- resume

def resolve_resume(resume: str, output_dir: str | Path) -> Checkpoint:
    """`latest` (newest checkpoint in output_dir), a run folder (its newest), or a step-N folder."""
    target = Path(output_dir) if resume == "latest" else Path(resume)
    if not target.is_dir():
        what = "the run folder (--output)" if resume == "latest" else "the folder"
        raise SdloraError(f"--resume {resume}: {what} {target} does not exist")
    match = _STEP_DIR.fullmatch(target.name)
    if match and (target / STATE_FILE).is_file():
        return Checkpoint(int(match.group(1)), target)
    checkpoints = [c for c in find_checkpoints(target) if c.state_path.is_file()]
    if not checkpoints:
        raise SdloraError(f"--resume {resume}: no checkpoint with a training state found in {target} "
                          "(expected checkpoints/step-N/state.pt; was save.save_state off?)")
    return checkpoints[-1]


def load_state(checkpoint: Checkpoint) -> dict:
    try:
        state = torch.load(checkpoint.state_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable/corrupt file: say which and what to do
        raise SdloraError(f"{checkpoint.state_path}: cannot read the training state ({exc}); "
                          "resume from an older checkpoint folder instead") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise SdloraError(f"{checkpoint.state_path}: not an sdlora training state (version {STATE_VERSION})")
    return state
