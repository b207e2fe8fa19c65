"""LoRA files at generation time: `--lora file:weight` arguments, loading, attaching each file as its
own named adapter (sdlora's own LoRA code, never PEFT), per-adapter weights, merging.

Every LoRA file becomes one adapter named after its file stem, so several LoRAs stack with
individual weights, and `compare` can sweep one LoRA's weight while the others stay put. Weight 0
skips an adapter entirely (the layer returns its base output), so weight 0 is the base model exactly.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdlora.errors import SdloraError
from sdlora.lora import inject as lora_inject
from sdlora.models import SDComponents


@dataclass(frozen=True)
class LoraSpec:
    path: Path
    weight: float = 1.0


@dataclass
class LoadedLora:
    """One LoRA file, attached to a model as adapter `adapter`."""

    spec: LoraSpec
    adapter: str
    metadata: dict[str, str] = field(default_factory=dict)
    format: str = ""
    hash: str = ""  # A1111's short hash (first 12 hex digits), as in its `Lora hashes` field
    modules: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.adapter


def parse_lora_arg(text: str) -> LoraSpec:
    """`style.safetensors:0.8` -> LoraSpec(path, 0.8); without `:weight` the weight is 1.0.

    Only a trailing `:number` is a weight, so paths containing colons (C:\\x.safetensors) still work.
    """
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            return LoraSpec(Path(head), float(tail))
        except ValueError:
            pass
    return LoraSpec(Path(text), 1.0)


def short_hash(path: str | Path) -> str:
    """A1111's LoRA hash: sha256 of a .safetensors file's tensor bytes (after the header), else of
    the whole file; first 12 hex digits. Matches what A1111/civitai show for the same file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if Path(path).suffix == ".safetensors":
            header_len = struct.unpack("<Q", handle.read(8))[0]
            handle.seek(8 + header_len)
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def adapter_name(path: Path, taken: set[str]) -> str:
    """A unique adapter name from the file stem ('.' is not allowed in adapter names)."""
    stem = path.stem.replace(".", "_") or "lora"
    name, n = stem, 2
    while name in taken:
        name, n = f"{stem}_{n}", n + 1
    return name


def attach_loras(components: SDComponents, specs: list[LoraSpec]) -> list[LoadedLora]:
    """Load every file and attach it as its own adapter with its weight as multiplier."""
    from sdlora.formats import apply, io  # formats depends on models; imported when needed

    loaded: list[LoadedLora] = []
    for spec in specs:
        if not spec.path.is_file():
            raise SdloraError(f"--lora {spec.path}: file not found")
        lora, metadata, fmt = io.load_lora_file(spec.path)
        name = adapter_name(spec.path, {item.adapter for item in loaded})
        modules = apply.attach(components, lora, adapter=name, multiplier=spec.weight)
        loaded.append(LoadedLora(spec, name, dict(metadata), fmt, short_hash(spec.path), list(modules)))
    return loaded


def _networks(components: SDComponents) -> list[torch.nn.Module]:
    return [components.unet, components.text_encoder]


def set_weights(components: SDComponents, weights: dict[str, float]) -> None:
    """Set each adapter's multiplier (adapter name -> weight) on the UNet and the text encoder."""
    for adapter, weight in weights.items():
        found = 0
        for net in _networks(components):
            if adapter in lora_inject.adapter_names(net):
                found += lora_inject.set_multiplier(net, adapter, weight)
        if not found:
            raise SdloraError(f"no LoRA adapter named {adapter!r} is attached")


def merge(components: SDComponents) -> int:
    """Fold every attached adapter (at its current weight) into the base weights: no per-step cost."""
    return sum(lora_inject.merge_lora(net) for net in _networks(components))


def unmerge(components: SDComponents) -> int:
    return sum(lora_inject.unmerge_lora(net) for net in _networks(components))


def detach(components: SDComponents) -> None:
    """Remove every adapter; base weights come back exactly (merged layers are unmerged first)."""
    for net in _networks(components):
        lora_inject.remove(net)
