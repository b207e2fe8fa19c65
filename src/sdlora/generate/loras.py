"""LoRA files at generation time: `--lora file:weight` arguments, A1111 short hashes, loading and
attaching each file as its own named adapter (through sdlora.formats.apply, never PEFT).

Every LoRA file becomes one adapter named after its file stem, so several LoRAs stack with
individual weights, and `compare` can sweep one LoRA's weight while the others stay put. Weight 0
skips an adapter entirely (the layer returns its base output), so weight 0 is the base model exactly.
"""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.fileio import regular_file
from sdlora.lora import lora_modules
from sdlora.lora.adapter import check_multiplier
from sdlora.models import SDComponents


@dataclass(frozen=True)
class LoraSpec:
    path: Path
    weight: float = 1.0
    lbw: tuple[float, ...] | None = None  # 26 block weights (sdlora.generate.blocks), None: all 1


@dataclass
class LoadedLora:
    """One LoRA file, attached to a model as adapter `adapter`."""

    spec: LoraSpec
    adapter: str
    metadata: dict[str, str] = field(default_factory=dict)
    format: str = ""
    hash: str = ""  # A1111's short hash (first 12 hex digits), as in its `Lora hashes` field
    modules: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)  # new tokens from embeddings bundled in the file

    @property
    def name(self) -> str:
        return self.adapter


def parse_lora_arg(text: str) -> LoraSpec:
    """`style.safetensors:0.8` -> LoraSpec(path, 0.8); without `:weight` the weight is 1.0.
    A last `:lbw=PRESET` or `:lbw=W,W,...` (17 or 26 numbers) adds block weights (sdlora.generate.blocks).

    Only a trailing `:number` is a weight, so paths containing colons (C:\\x.safetensors) still work.
    The weight must be finite and at most MAX_MULTIPLIER in size (SdloraError otherwise).
    """
    head, sep, tail = text.rpartition(":")
    if sep and head and tail.startswith("lbw="):
        from sdlora.generate.blocks import parse_lbw

        spec = parse_lora_arg(head)
        return LoraSpec(spec.path, spec.weight, parse_lbw(tail[4:], f"{text}: lbw"))
    if sep and head:
        try:
            weight = float(tail)
        except ValueError:
            return LoraSpec(Path(text), 1.0)
        return LoraSpec(Path(head), check_multiplier(weight, f"{text}: the LoRA weight"))
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


def check_files(specs: list[LoraSpec]) -> None:
    """Fail before the (slow) model load when a LoRA file is missing."""
    for spec in specs:
        if not spec.path.exists():
            raise SdloraError(f"--lora {spec.path}: file not found")
        try:
            regular_file(spec.path, "LoRA file")
        except SdloraError as err:
            raise SdloraError(f"--lora {err}") from None


def attach_loras(components: SDComponents, specs: list[LoraSpec]) -> list[LoadedLora]:
    """Load every file and attach it as its own adapter with its weight as multiplier; the adapters
    take the dtype and device of the layer they wrap (fp16 model: fp16 LoRA). Token embeddings bundled
    in a file (pivotal tuning, `bundle_emb.*`) are taught to the tokenizer and text encoder; they do
    not depend on the LoRA's weight."""
    from sdlora.formats import apply, io  # formats depends on models; imported when needed
    from sdlora.formats.embeddings import split_bundle
    from sdlora.formats.modules import component_paths

    # The model's own module paths, so that files for a smaller SD-architecture model (sd-tiny) resolve.
    paths = component_paths(components.unet, components.text_encoder)
    check_files(specs)
    loaded: list[LoadedLora] = []
    for spec in specs:
        state, metadata = io.read_safetensors(spec.path)
        state, bundled = split_bundle(state, str(spec.path))
        lora, metadata, fmt = io.parse_state(state, metadata, str(spec.path), module_paths=paths)
        name = adapter_name(spec.path, {item.adapter for item in loaded})
        modules = apply.attach(components, lora, adapter=name, multiplier=spec.weight)
        tokens = apply.attach_embeddings(components, bundled, str(spec.path)) if bundled else []
        loaded.append(LoadedLora(spec, name, dict(metadata), fmt, short_hash(spec.path), list(modules), tokens))
        if spec.lbw is not None:
            set_block_weights(components, name, spec.weight, spec.lbw)
    for net in (components.unet, components.text_encoder):
        for wrapper in lora_modules(net).values():
            wrapper.adapters.to(device=wrapper.base.weight.device, dtype=wrapper.base.weight.dtype)
    return loaded


def set_weights(components: SDComponents, weights: dict[str, float],
                lbw: dict[str, tuple[float, ...] | None] | None = None) -> None:
    """Set each adapter's multiplier (adapter name -> weight) wherever it is attached; an adapter with
    block weights in `lbw` gets weight x its block's weight on each module."""
    from sdlora.formats import apply

    for adapter, weight in weights.items():
        vector = (lbw or {}).get(adapter)
        if vector is None:
            apply.set_multiplier(components, adapter, weight)
        else:
            set_block_weights(components, adapter, weight, vector)


def set_block_weights(components: SDComponents, adapter: str, weight: float, vector: tuple[float, ...]) -> int:
    """Adapter `adapter` at `weight` times each module's block weight (26-value `vector`); returns the
    number of modules set. A module whose block weight is 0 is skipped like a LoRA at weight 0."""
    from sdlora.generate.blocks import ratio

    count = 0
    for component, net in (("unet", components.unet), ("text_encoder", components.text_encoder)):
        for path, wrapper in lora_modules(net).items():
            if adapter in wrapper.adapters:
                if wrapper.merged:
                    raise SdloraError("cannot change block weights while LoRA is merged into the weights")
                value = check_multiplier(weight * ratio(vector, component, path), f"{adapter}: LoRA weight")
                wrapper.adapters[adapter].multiplier = value
                count += 1
    if not count:
        raise SdloraError(f"no LoRA adapter named {adapter!r} is attached")
    return count
