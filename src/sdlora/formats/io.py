"""Reading and writing LoRA files in any supported format (safetensors only).

load_lora_file() refuses, with one clear message, a missing file, a file that is not safetensors,
a LoRA for another base model, LyCORIS-only network types and keys naming no SD 1.x module.
save_lora_file() writes atomically (sdlora.fileio).
"""
from __future__ import annotations

import hashlib
import json
import logging
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from sdlora import __version__
from sdlora.errors import SdloraError
from sdlora.fileio import atomic_write_bytes, regular_file
from sdlora.formats import diffusers, kohya, native
from sdlora.formats.detect import detect_format, refuse_unsupported
from sdlora.formats.embeddings import is_bundle_key, split_bundle, to_bundle
from sdlora.formats.modules import ModulePaths
from sdlora.lora.native import FORMAT_KEY

log = logging.getLogger(__name__)

FORMATS = ("kohya", "diffusers", "native")
WRITERS = {"kohya": kohya.to_kohya, "diffusers": diffusers.to_diffusers, "native": native.to_native}
READERS = {"kohya": kohya.from_kohya, "diffusers": diffusers.from_diffusers, "native": native.from_native}
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# Metadata describing one particular tensor layout: dropped on writing, each writer makes its own.
LAYOUT_METADATA = (diffusers.METADATA_KEY, "sshs_model_hash", "sshs_legacy_hash", "format", FORMAT_KEY,
                   native.VERSION_KEY)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a .safetensors file; SdloraError when missing or not safetensors."""
    path = regular_file(path, "LoRA file")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise SdloraError(f"{path}: pickle checkpoints are not loaded (they can run code); "
                          "use the .safetensors version of this LoRA")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise SdloraError(f"{path}: not a readable safetensors file ({err})") from None
    return state, metadata


def parse_state(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source: str, *,
                module_paths: ModulePaths | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """An in-memory file (state dict + metadata) -> (canonical dict, metadata, format name).
    Bundled token embeddings (`bundle_emb.*`, sdlora.formats.embeddings) are not LoRA weights: left out."""
    state = {k: t for k, t in state.items() if not is_bundle_key(k)}
    refuse_unsupported(state, metadata, source)
    try:
        fmt = detect_format(state, metadata)
        lora, metadata = READERS[fmt](state, metadata, module_paths=module_paths, source=source)
    except SdloraError as err:  # every message names the file once
        raise (err if str(err).startswith(source) else SdloraError(f"{source}: {err}")) from None
    return lora, metadata, fmt


def load_lora_file(path: str | Path, *, module_paths: ModulePaths | None = None):
    """Any supported LoRA file -> (canonical dict, metadata, format: "kohya" | "diffusers" | "native").

    module_paths ({component: canonical module paths}) names the modules the file may target;
    default: SD 1.4's. Tensors keep the file's dtype; alphas are 0-d float32.
    """
    state, metadata = read_safetensors(path)
    return parse_state(state, metadata, str(path), module_paths=module_paths)


def encode(lora: Mapping[str, torch.Tensor], metadata: Mapping[str, object] | None = None, fmt: str = "kohya",
           dtype: torch.dtype | None = torch.float16) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Canonical dict -> (state dict, string metadata) of format `fmt`, floats cast to `dtype` (None: keep)."""
    if fmt not in WRITERS:
        raise SdloraError(f"unknown LoRA format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "kohya" and any(k.endswith(".dora_scale") for k in lora):
        log.warning("this LoRA uses DoRA: kohya files keep it as .dora_scale (ComfyUI, LyCORIS and sdlora read it), "
                    "but diffusers' load_lora_weights drops it; write --to diffusers for diffusers")
    carried = {k: v for k, v in _stringify(metadata or {}).items() if k not in LAYOUT_METADATA}
    state, meta = WRITERS[fmt](dict(lora), carried)
    cast = {k: (t.to(dtype) if _casts(k, t, dtype) else t).detach().cpu().contiguous() for k, t in state.items()}
    return cast, meta


def _casts(key: str, tensor: torch.Tensor, dtype: torch.dtype | None) -> bool:
    # alphas stay float32: a 0-d scale costs nothing and fp16 would round values like 1.3
    return dtype is not None and tensor.is_floating_point() and not key.endswith(".alpha")


def _stringify(metadata: Mapping[str, object]) -> dict[str, str]:
    """safetensors metadata must be str -> str: numbers/bools via str(), lists/dicts as JSON."""
    return {str(k): v if isinstance(v, str) else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
            for k, v in metadata.items()}


def tensor_hash(blob: bytes) -> str:
    """sha256 of a serialized safetensors file's tensor data (kohya's sshs_model_hash, A1111's hash)."""
    header_len = struct.unpack("<Q", blob[:8])[0]
    return hashlib.sha256(blob[8 + header_len:]).hexdigest()


def save_lora_file(path: str | Path, lora: Mapping[str, torch.Tensor], metadata: Mapping[str, object] | None = None,
                   fmt: str = "kohya", dtype: torch.dtype | None = torch.float16,
                   embeddings: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write `lora` (canonical) as a `fmt` safetensors file, atomically; returns the path.
    `embeddings` ({token: (n, D)}) are bundled into kohya files (A1111 / ComfyUI read them)."""
    path = Path(path)
    state, meta = encode(lora, metadata, fmt, dtype)
    if embeddings and fmt == "kohya":
        state.update({k: (t.to(dtype) if dtype is not None else t).detach().cpu().contiguous()
                      for k, t in to_bundle(embeddings).items()})
    meta["sdlora_version"] = __version__  # every file sdlora writes says which sdlora wrote it
    if fmt == "kohya":
        meta.setdefault("ss_output_name", path.stem)
        meta.setdefault("modelspec.title", path.stem)
        meta["sshs_model_hash"] = tensor_hash(st_save(state))  # data section does not depend on metadata
    return atomic_write_bytes(path, st_save(state, metadata=meta))


def load_lora_file_with_embeddings(path: str | Path, *, module_paths: ModulePaths | None = None):
    """load_lora_file plus the token embeddings bundled in the file: (canonical dict, metadata, format,
    {token: (n, D)}); for the file tools that re-write a LoRA (convert, resize, merge-loras), so that
    what a pivotal-tuning file carries besides its LoRA is written out again, not dropped."""
    state, metadata = read_safetensors(path)
    _, bundled = split_bundle(state, str(path))
    lora, metadata, fmt = parse_state(state, metadata, str(path), module_paths=module_paths)
    return lora, metadata, fmt, bundled


def warn_dropped_embeddings(src: str | Path, embeddings: Mapping[str, torch.Tensor], fmt: str) -> None:
    """Only kohya files hold bundled embeddings: say so when re-writing them into another format."""
    if embeddings and fmt != "kohya":
        log.warning("%s: the embeddings bundled in it (%s) are left out: only kohya files carry them",
                    src, ", ".join(embeddings))


def convert_lora_file(src: str | Path, dst: str | Path, fmt: str, *, dtype: torch.dtype | None = None,
                      module_paths: ModulePaths | None = None) -> tuple[str, str]:
    """Re-write a LoRA file in format `fmt` (dtype None keeps the file's). Returns (from, to) formats.
    Bundled token embeddings go along into kohya files; other formats cannot hold them (a warning)."""
    lora, metadata, src_fmt, bundled = load_lora_file_with_embeddings(src, module_paths=module_paths)
    if dtype is None:
        dtype = next((t.dtype for k, t in lora.items() if not k.endswith(".alpha")), None)
    warn_dropped_embeddings(src, bundled, fmt)
    save_lora_file(dst, lora, metadata, fmt, dtype, embeddings=bundled)
    return src_fmt, fmt
