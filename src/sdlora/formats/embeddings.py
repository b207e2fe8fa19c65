"""Trained token embeddings in files: bundled inside a kohya LoRA file, or as a standalone embedding.

One in-memory form, {token: (vectors, D) tensor}, and two layouts, as pure functions over it:

    bundled (kohya LoRA file; A1111 and ComfyUI read it)   bundle_emb.<token>.string_to_param.*  (n, D)
    standalone (A1111 embeddings folder, diffusers'        emb_params  (all tokens' vectors stacked, n, D)
        load_textual_inversion(file, token=...))           metadata sdlora_tokens: the tokens, in order

A bundled key names one token (A1111 splits the key at its first two dots, so a token holds no `.`);
OneTrainer writes `bundle_emb.<token>.clip_l` for SD 1.x, read the same. A standalone file has exactly
one tensor (diffusers takes a one-key file as one embedding); A1111 names it after the file.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from sdlora.errors import SdloraError
from sdlora.fileio import atomic_write_bytes

BUNDLE_PREFIX = "bundle_emb."
BUNDLE_PARAMS = ("string_to_param.*", "clip_l")  # the first is written; both are read (SD 1.x)
STANDALONE_KEY = "emb_params"
TOKENS_KEY = "sdlora_tokens"
STANDALONE_SUFFIX = ".emb.safetensors"  # <name>.emb.safetensors beside <name>.safetensors


def is_bundle_key(key: str) -> bool:
    return key.startswith(BUNDLE_PREFIX)


def check_tokens(embeddings: Mapping[str, torch.Tensor], what: str = "embeddings") -> None:
    """Every token a non-empty name without `.` or spaces, every tensor (n, D) with one D."""
    widths = set()
    for token, tensor in embeddings.items():
        if not token or "." in token or any(c.isspace() for c in token):
            raise SdloraError(f"{what}: token {token!r} must be a non-empty word without `.` or spaces")
        if tensor.dim() != 2 or tensor.shape[0] < 1:
            raise SdloraError(f"{what}: token {token!r} has a tensor of shape {tuple(tensor.shape)}, not (n, D)")
        widths.add(int(tensor.shape[1]))
    if len(widths) > 1:
        raise SdloraError(f"{what}: the tokens' vectors have different widths {sorted(widths)}")


def to_bundle(embeddings: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{token: (n, D)} -> the kohya file's `bundle_emb.<token>.string_to_param.*` entries."""
    check_tokens(embeddings)
    return {f"{BUNDLE_PREFIX}{token}.{BUNDLE_PARAMS[0]}": tensor for token, tensor in embeddings.items()}


def split_bundle(state: Mapping[str, torch.Tensor], source: str = "LoRA file"):
    """A LoRA file's tensors -> (the LoRA's own tensors, {token: (n, D)} bundled embeddings)."""
    rest, embeddings = {}, {}
    for key, tensor in state.items():
        if not is_bundle_key(key):
            rest[key] = tensor
            continue
        token, _, param = key[len(BUNDLE_PREFIX):].partition(".")
        if param not in BUNDLE_PARAMS:
            raise SdloraError(f"{source}: bundled embedding {key!r} is not an SD 1.x text-encoder embedding "
                              f"(expected {BUNDLE_PREFIX}<token>.{BUNDLE_PARAMS[0]})")
        embeddings[token] = tensor.unsqueeze(0) if tensor.dim() == 1 else tensor
    check_tokens(embeddings, source)
    return rest, embeddings


def expand_vectors(embeddings: Mapping[str, torch.Tensor]) -> tuple[list[str], torch.Tensor]:
    """{token: (n, D)} -> (one token per vector, (N, D)): a token of n > 1 vectors becomes `token`,
    `token_1`, ... `token_{n-1}` (diffusers' names; its pipelines expand `token` in prompts to all)."""
    tokens, rows = [], []
    for token, tensor in embeddings.items():
        tokens += [token] + [f"{token}_{i}" for i in range(1, tensor.shape[0])]
        rows.append(tensor)
    return tokens, torch.cat(rows) if rows else torch.zeros(0, 0)


def to_standalone(embeddings: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """{token: (n, D)} -> (state {emb_params: all vectors stacked}, metadata naming the tokens)."""
    check_tokens(embeddings)
    if not embeddings:
        raise SdloraError("no embeddings to write")
    stacked = torch.cat([t for t in embeddings.values()])
    counts = {token: int(t.shape[0]) for token, t in embeddings.items()}
    return {STANDALONE_KEY: stacked}, {TOKENS_KEY: json.dumps(counts)}


def from_standalone(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], name: str,
                    source: str = "embedding file") -> dict[str, torch.Tensor]:
    """A standalone file back to {token: (n, D)}; without sdlora's token list, one token `name`."""
    tensors = [t for k, t in state.items() if k in (STANDALONE_KEY, "*")] or list(state.values())
    if len(state) != 1 or tensors[0].dim() not in (1, 2):
        raise SdloraError(f"{source}: not an embedding file (expected one tensor `{STANDALONE_KEY}` of shape (n, D))")
    stacked = tensors[0] if tensors[0].dim() == 2 else tensors[0].unsqueeze(0)
    try:
        counts = json.loads(metadata[TOKENS_KEY]) if TOKENS_KEY in metadata else {name: int(stacked.shape[0])}
        sizes = [int(n) for n in counts.values()]
    except (ValueError, TypeError, AttributeError):
        raise SdloraError(f"{source}: metadata {TOKENS_KEY} is not a {{token: vectors}} table") from None
    if sum(sizes) != stacked.shape[0] or min(sizes, default=0) < 1:
        raise SdloraError(f"{source}: {TOKENS_KEY} names {sum(sizes)} vectors, the file holds {stacked.shape[0]}")
    out = dict(zip(counts, torch.split(stacked, sizes)))
    check_tokens(out, source)
    return out


def standalone_path(lora_path: str | Path) -> Path:
    """`runs/me/me.safetensors` -> `runs/me/me.emb.safetensors`."""
    path = Path(lora_path)
    return path.with_name(path.name[:-len(".safetensors")] + STANDALONE_SUFFIX if path.name.endswith(
        ".safetensors") else path.name + STANDALONE_SUFFIX)


def save_standalone(path: str | Path, embeddings: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                    metadata: Mapping[str, str] | None = None) -> Path:
    """Write a standalone embedding file atomically; returns the path."""
    state, meta = to_standalone(embeddings)
    state = {k: t.detach().to("cpu", dtype).contiguous() for k, t in state.items()}
    return atomic_write_bytes(path, st_save(state, metadata={**dict(metadata or {}), **meta}))
