"""Fetching an SD 1.x model from the Hugging Face hub into the local cache (or finding it there).

Only the files sdlora uses are fetched: configs, tokenizer, and the safetensors weights of unet, vae
and text_encoder (no safety checker, no .bin duplicates, no fp16/flax variants). With the hub offline
(HF_HUB_OFFLINE=1, or no network) a model that is not cached gives one SdloraError saying how to get it.
"""
from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import constants, snapshot_download
from huggingface_hub.errors import LocalEntryNotFoundError

from sdlora.config import DEFAULT_MODEL  # noqa: F401 (re-exported: the one default, in the config tree)
from sdlora.errors import SdloraError

HUB_FILES = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
]


def hub_offline() -> bool:
    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or flag in ("1", "true", "yes", "on")


def how_to_get(repo_id: str) -> str:
    return (
        f"download it where there is network (`hf download {repo_id}`) and copy the cache or folder here, "
        f"or pass --model with a local diffusers folder or an SD 1.x .ckpt/.safetensors file"
    )


def fetch(repo_id: str) -> Path:
    """The local snapshot folder of `repo_id`: from the cache, else downloaded (unless offline)."""
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        pass  # not cached: download below, if allowed
    if hub_offline():
        raise SdloraError(
            f"model {repo_id!r} is not a local path and not in the Hugging Face cache, and the hub is offline "
            f"(HF_HUB_OFFLINE); {how_to_get(repo_id)}"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as exc:  # network, auth, missing repo: many exception types, one message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SdloraError(f"model {repo_id!r}: could not download from the Hugging Face hub ({first}); {how_to_get(repo_id)}") from None
