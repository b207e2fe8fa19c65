"""Opening `.ckpt` pickles without running their code.

A `.ckpt` is a pickle: loading it normally may call any Python function the file names (os.system...).
We always use torch's restricted unpickler (`weights_only=True`: tensors, containers, numbers,
strings) and allow a short list of extra globals that real SD checkpoints contain and that are
harmless. A file needing any other global is refused with an SdloraError naming it; nothing from the
file runs. The allowlist is data: `SAFE_GLOBALS` maps the name written in the pickle to what we
hand the unpickler instead.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sdlora.errors import SdloraError
from sdlora.fileio import regular_file


class LightningCallbackStandIn:
    """Inert stand-in for pytorch_lightning callback classes.

    sd-v1-4.ckpt stores `{"callbacks": {ModelCheckpoint: {...}}}`: the class object is a dict key.
    We never import pytorch_lightning; the key becomes this class, and any instance stays empty.
    """


_NP_SCALAR = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar

SAFE_GLOBALS: dict[str, Any] = {
    # pytorch_lightning training state saved next to the weights.
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": LightningCallbackStandIn,
    "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint": LightningCallbackStandIn,
    # numpy scalars (e.g. a best score or step counter): rebuilt from a dtype and raw bytes only.
    "numpy.core.multiarray.scalar": _NP_SCALAR,
    "numpy._core.multiarray.scalar": _NP_SCALAR,
    "numpy.dtype": np.dtype,
    # the per-dtype classes numpy >= 1.25 builds dtypes with (numpy.dtypes.Float64DType, ...)
    **{f"numpy.dtypes.{name}": getattr(np.dtypes, name) for name in dir(getattr(np, "dtypes", None))
       if name.endswith("DType") and isinstance(getattr(np.dtypes, name), type)},
}

_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)|got <class '([\w.]+)'>")


def refused_global(message: str) -> str | None:
    """The global named in torch's weights-only refusal message, if any."""
    match = _GLOBAL_IN_MESSAGE.search(message)
    return (match.group(1) or match.group(2)) if match else None


def safe_load(path: str | Path) -> Any:
    """Unpickle a torch checkpoint with the restricted unpickler (memory-mapped when the format allows).

    Raises SdloraError naming the file and the global for a pickle that wants to run other code,
    and for a file that is not a readable torch checkpoint (truncated, corrupt, not a pickle). The
    file is hostile input to the unpickler: whatever the allowed calls raise on arguments it chose
    (TypeError, SystemError, MemoryError...) is that same one-line refusal, never a traceback.
    """
    path = regular_file(path, "checkpoint file")
    try:
        return _load(path)
    except SdloraError:
        raise
    except Exception as exc:  # noqa: BLE001 (see the docstring: any failure inside is the file's)
        raise SdloraError(_unreadable(path, f"{type(exc).__name__}: {exc}")) from None


def _load(path: Path) -> Any:
    mmap = zipfile.is_zipfile(path)  # only the zip format (torch >= 1.6) can be memory-mapped
    allow = [(obj, name) for name, obj in SAFE_GLOBALS.items()]
    try:
        with torch.serialization.safe_globals(allow):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        name = refused_global(str(exc))
        if name is not None:
            raise SdloraError(
                f"{path}: refused to unpickle, it asks for the global `{name}`, which could run code; "
                f"use a .safetensors version of this model (or convert the .ckpt in an isolated sandbox you trust)"
            ) from None
        raise SdloraError(_unreadable(path, _unpickler_reason(str(exc)))) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SdloraError(_unreadable(path, str(exc) or type(exc).__name__)) from None


def _unreadable(path: Path, reason: str) -> str:
    first = reason.strip().split(". ")[0].splitlines()[0][:200] if reason.strip() else "empty file or unexpected end"
    return f"{path}: not a readable torch checkpoint (truncated, corrupt, or not a torch.save file): {first}"


def _unpickler_reason(message: str) -> str:
    match = re.search(r"WeightsUnpickler error:\s*(.+)", message)
    return match.group(1) if match else message
