"""A diffusers component folder (unet/, text_encoder/, ...) and its weight files: that they are regular
files, which of them diffusers would load, the network built empty from its config.json, and the
network read one tensor at a time in a low precision. Used by the folder loader (sdlora.models.folder)
and the lazy weight reader (sdlora.models.model_weights).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn

from sdlora.errors import SdloraError
from sdlora.fileio import regular_file
from sdlora.models.checkpoint_io import SAFETENSORS_SUFFIX
from sdlora.models.tensor_file import TensorFile


def regular_files_only(part: Path) -> None:
    """Every file in a component folder is a regular file: diffusers would block on a FIFO forever."""
    for child in part.iterdir():
        if not child.is_dir():
            regular_file(child, f"{part.name} file")


def weight_files(part: Path) -> list[Path] | None:
    """The .safetensors files diffusers would load from a component folder (shards included; the
    fp16 variant only when there are no plain weights), or None when it loads .bin files."""
    regular_files_only(part)
    files = sorted(p for p in part.iterdir() if p.suffix in (SAFETENSORS_SUFFIX, ".bin"))
    if not files:
        raise SdloraError(f"{part}: no weight files (*.safetensors or *.bin); not a complete diffusers model folder")
    plain = [p for p in files if p.name.count(".") == 1]
    fp16 = [p for p in files if ".fp16." in p.name and p.suffix == SAFETENSORS_SUFFIX]
    chosen = plain or fp16
    return chosen if chosen and all(p.suffix == SAFETENSORS_SUFFIX for p in chosen) else None


def empty_network(part: Path, build) -> nn.Module:
    config_file = part / "config.json"
    try:
        config = json.loads(config_file.read_text())
        with init_empty_weights():
            return build(config)
    except Exception as err:  # noqa: BLE001 (an untrusted config reaches third-party constructors)
        first = (str(err).strip().splitlines() or [""])[0][:120]
        what = f"{type(err).__name__}: {first}"
        raise SdloraError(f"{config_file}: not a buildable {part.name} config ({what})") from None


def read_network(part: Path, build, dtype: torch.dtype) -> nn.Module | None:
    """A network from a diffusers component folder, each tensor read and cast to `dtype` on its own:
    the peak is the cast network plus one tensor. diffusers' loader memory-maps the file, so casting
    the full-size UNet to bf16 held its 3.4 GB of fp32 pages beside the 1.7 GB cast (a 6.2 GB peak
    for `sdlora train` in bf16 on the CPU, against 3.3-3.7 GB while training). None when the folder
    is not a plain set of .safetensors whose keys are exactly the network's (then diffusers loads it)."""
    files = weight_files(part)
    if files is None:
        return None
    network = empty_network(part, build)
    expected = set(network.state_dict())
    state = {}
    for path in files:
        tensors = TensorFile(path)
        if not set(tensors.keys()) <= expected:
            return None  # an older key layout: diffusers' loader converts it
        for key in tensors.keys():
            state[key] = tensors.read(key).to(dtype)
    if set(state) != expected:
        return None
    network.load_state_dict(state, strict=True, assign=True)
    if any(t.is_meta for t in (*network.parameters(), *network.buffers())):
        return None  # a buffer the files do not hold (not in SD's UNet); diffusers builds those
    return network
