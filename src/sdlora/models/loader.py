"""`load_components(model)`: one entry point for every way a user names an SD 1.x model.

`model` is resolved in this order:
  "tiny"                       -> the bundled trained sd-tiny (a diffusers folder inside the package)
  an existing file             -> single original checkpoint (.ckpt / .safetensors, LDM layout)
  an existing folder           -> diffusers layout
  "owner/name"                 -> a Hugging Face hub id (cache first; download only when online)
anything else is an SdloraError naming it.
"""
from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import torch

from sdlora.dtypes import parse_dtype
from sdlora.errors import SdloraError
from sdlora.fileio import regular_file
from sdlora.models import hub
from sdlora.models.checkpoint_io import CHECKPOINT_SUFFIXES, is_checkpoint_file
from sdlora.models.components import SDComponents
from sdlora.models.folder import load_folder
from sdlora.models.single_file import load_single_file

DEFAULT_MODEL = hub.DEFAULT_MODEL
TINY = "tiny"
TINY_ASSET = "tiny/assets/sd-tiny"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def tiny_model_dir() -> Path:
    """Where the bundled sd-tiny model lives (it may not be installed)."""
    return Path(str(resources.files("sdlora").joinpath(TINY_ASSET)))


def resolve_model(model: str | Path) -> tuple[str, str | Path]:
    """("file" | "folder" | "hub", location) for a --model value."""
    text = str(model)
    if text == TINY:
        folder = tiny_model_dir()
        if not folder.is_dir():
            raise SdloraError(f"model 'tiny': the bundled sd-tiny model is not installed (expected {folder})")
        return "folder", folder
    path = Path(text).expanduser()
    if path.is_dir():
        return "folder", path
    if path.exists():  # a file; a FIFO or device is refused here, never opened
        path = regular_file(path, "model file")
        if not is_checkpoint_file(path):
            raise SdloraError(f"{path}: not a model checkpoint; expected one of {', '.join(CHECKPOINT_SUFFIXES)}")
        return "file", path
    if HUB_ID.match(text) and not text.endswith(CHECKPOINT_SUFFIXES):
        return "hub", text
    raise SdloraError(f"model {text!r}: no such file or folder (and not a hub id like {DEFAULT_MODEL})")


def load_components(
    model: str | Path = DEFAULT_MODEL,
    *,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
) -> SDComponents:
    """Tokenizer, text encoder, VAE, UNet and scheduler of an SD 1.x model, in `dtype` (default fp32)
    on `device` (default CPU). Networks are in eval mode; nothing is frozen here."""
    dtype = parse_dtype(dtype)
    kind, where = resolve_model(model)
    if kind == "file":
        components = load_single_file(where, dtype)
    elif kind == "folder":
        source = TINY if str(model) == TINY else str(where)
        components = load_folder(where, dtype, source=source)
    else:
        components = load_folder(hub.fetch(where), dtype, source=where)
    return components.to(device) if device is not None else components
