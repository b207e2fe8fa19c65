"""Atomic files, the run folder's checkpoint layout, training-state save/resume, keep-last-K.

    OUT/checkpoints/step-000200/{<name>.safetensors, state.pt}

Every file is written atomically through sdlora.fileio (temporary name in the same folder, fsync,
rename, fsync of the folder), and a checkpoint folder is assembled under
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from sdlora.errors import SdloraError
from sdlora.fileio import atomic_write, atomic_write_bytes, atomic_write_text, make_temp_dir  # noqa: F401 (re-exported)
from sdlora.fileio import fsync_dir as _fsync_dir

STATE_FILE = "state.pt"
CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"step-(\d+)")
STATE_VERSION = 1


# ----------------------------------------------------------------------------- atomic files

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
        staging = make_temp_dir(final.parent, final.name)
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
