"""sdlora's native LoRA file: safetensors, with what a user needs to know about it in the header.

The header metadata (all strings) always carries `sdlora_format` and `sdlora_version`;
native_metadata() fills the standard fields: rank, alpha, targets (JSON), base_model and
training_params (free-form JSON). The tensors are whatever flat dict the caller saves (a
`lora_state_dict`, or the pipeline-level dict of sdlora.formats).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from sdlora import __version__
from sdlora.errors import SdloraError
from sdlora.fileio import atomic_save_safetensors, regular_file

FORMAT_KEY = "sdlora_format"
FORMAT = "native/1"


def native_metadata(*, rank: int | None = None, alpha: float | None = None, targets=None,
                    base_model: str | None = None, training_params: dict | None = None, **extra) -> dict[str, str]:
    """The standard header fields; None values are left out, non-strings are JSON-encoded."""
    fields = {"rank": rank, "alpha": alpha, "targets": targets, "base_model": base_model,
              "training_params": training_params, **extra}
    return _stringify({k: v for k, v in fields.items() if v is not None})


def _stringify(metadata: dict) -> dict[str, str]:
    out = {}
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise SdloraError(f"metadata keys must be strings, got {key!r}")
        try:
            out[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        except TypeError:
            raise SdloraError(f"metadata field {key!r} cannot be written as JSON ({type(value).__name__})") from None
    return out


def save_native(path: str | os.PathLike, sd: dict[str, torch.Tensor], metadata: dict | None = None) -> Path:
    """Write `sd` with `metadata` to `path` atomically (a crash never leaves half a file)."""
    path = Path(path)
    tensors = {}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            raise SdloraError(f"{key!r} is a {type(value).__name__}, not a tensor; only tensors can be saved")
        tensors[key] = value.detach().to("cpu").contiguous()
    header = {**_stringify(metadata or {}), FORMAT_KEY: FORMAT}
    header.setdefault("sdlora_version", __version__)
    return atomic_save_safetensors(path, tensors, header)


def load_native(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a native file; SdloraError naming the file when it is not one."""
    path = regular_file(path, "LoRA file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise SdloraError(f"{path}: not a readable safetensors file ({err})") from None
    found = metadata.get(FORMAT_KEY)
    if found is None:
        raise SdloraError(f"{path}: not an sdlora native LoRA file (no {FORMAT_KEY!r} in its header); "
                          "load kohya/diffusers files through sdlora.formats")
    if found != FORMAT:
        raise SdloraError(f"{path}: sdlora format {found!r} is not supported (this sdlora reads {FORMAT!r}); "
                          "upgrade sdlora")
    return tensors, metadata
