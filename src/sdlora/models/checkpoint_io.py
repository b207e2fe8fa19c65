"""Reading and writing single-file checkpoints (.ckpt pickles and .safetensors), and converting one to
the other safely. Knows nothing of the SD layout: a file is a flat `{key: tensor}` state dict.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

from sdlora.errors import SdloraError
from sdlora.fileio import atomic_save_safetensors, regular_file
from sdlora.models.safe_pickle import safe_load

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
CHECKPOINT_SUFFIXES = (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES)


def is_checkpoint_file(path: Path) -> bool:
    return path.suffix.lower() in CHECKPOINT_SUFFIXES


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a .safetensors or (safely unpickled) .ckpt file.

    A Lightning .ckpt keeps the weights under "state_dict"; its other scalars (global_step, epoch)
    become metadata. Raises SdloraError naming the file when it is missing, of an unknown type,
    truncated or corrupt.
    """
    path = regular_file(path, "checkpoint file")
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        return _read_safetensors(path)
    if suffix in PICKLE_SUFFIXES:
        return _read_pickle(path)
    raise SdloraError(f"{path}: unknown checkpoint type {suffix!r}; expected one of {', '.join(CHECKPOINT_SUFFIXES)}")


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as exc:
        raise SdloraError(f"{path}: not a readable .safetensors file (truncated or corrupt?): {exc}") from None


def _read_pickle(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    obj = safe_load(path)
    if not isinstance(obj, dict):
        raise SdloraError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    metadata = {}
    state = obj
    if isinstance(obj.get("state_dict"), dict):  # Lightning layout: weights + training scalars
        state = obj["state_dict"]
        metadata = {k: str(v) for k, v in obj.items() if isinstance(v, (int, float, str))}
    tensors = {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise SdloraError(f"{path}: contains no tensors (expected a model state dict)")
    return tensors, metadata


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None):
    """Write tensors to a .safetensors file atomically (sdlora.fileio).

    safetensors refuses tensors that share storage (views, tied weights): those are cloned, so a file
    written here loads back with every key, each tensor its own copy.
    """
    path = Path(path)
    seen: set[tuple[int, int]] = set()
    flat = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        storage = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if tensor.numel() and storage in seen:
            tensor = tensor.clone()
        seen.add(storage)
        flat[key] = tensor
    atomic_save_safetensors(path, flat, metadata)


def convert_checkpoint(src: str | Path, dst: str | Path, *, overwrite: bool = False) -> int:
    """Convert a .ckpt pickle to .safetensors without running code from it; returns the tensor count.

    Keys stay as they are (LDM layout for SD checkpoints), so the result loads wherever the .ckpt did.
    """
    src, dst = Path(src), Path(dst)
    regular_file(src, "checkpoint file")
    if dst.suffix.lower() != SAFETENSORS_SUFFIX:
        raise SdloraError(f"{dst}: the output must end in .safetensors")
    if dst.exists() and not overwrite:
        raise SdloraError(f"{dst}: already exists; pass --overwrite to replace it")
    if dst.exists() and dst.resolve() == src.resolve():
        raise SdloraError(f"{dst}: output and input are the same file")
    tensors, metadata = read_state_dict(src)
    metadata = {**metadata, "sdlora_converted_from": src.name}
    write_safetensors(dst, tensors, metadata)
    return len(tensors)
