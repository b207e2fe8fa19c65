"""Fold LoRA files into a full SD 1.x model and save it: a diffusers folder, or one `.safetensors` in
the original LDM layout (what A1111/ComfyUI load as a checkpoint).

Each LoRA is attached as its own adapter with its weight as multiplier, merged by sdlora's layers
(W' = W + sum of weight * delta, DoRA included) and the wrappers are taken off, so the saved model
has the architecture and key names of the base.
"""
from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from sdlora.dtypes import parse_dtype
from sdlora.errors import SdloraError
from sdlora.formats import apply
from sdlora.formats.io import load_lora_file
from sdlora.models.checkpoint_io import write_safetensors
from sdlora.models.components import SDComponents
from sdlora.models.loader import load_components
from sdlora.models.pipeline import build_pipeline
from sdlora.models.single_file import ldm_state_dict

SINGLE_FILE_SUFFIX = ".safetensors"
REFUSED_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def merge_loras(components: SDComponents, loras: Sequence[tuple[Mapping[str, torch.Tensor], float]]) -> int:
    """Fold each (canonical LoRA, weight) into the networks in place; returns the number of layers changed."""
    if not loras:
        raise SdloraError("give at least one LoRA to merge")
    if apply.adapters(components):
        raise SdloraError(f"the model already carries LoRA adapters {sorted(apply.adapters(components))}; "
                          "detach them before merging")
    try:
        for i, (lora, weight) in enumerate(loras):
            apply.attach(components, lora, adapter=f"merge{i}", multiplier=weight)
    except BaseException:
        apply.detach(components)
        raise
    return apply.bake(components)


def output_layout(out: str | Path) -> str:
    """"ldm" for a .safetensors path, "diffusers" for a folder; SdloraError for pickle suffixes."""
    suffix = Path(out).suffix.lower()
    if suffix in REFUSED_SUFFIXES:
        raise SdloraError(f"{out}: write a .safetensors file (LDM layout) or a folder (diffusers layout), "
                          "not a pickle checkpoint")
    return "ldm" if suffix == SINGLE_FILE_SUFFIX else "diffusers"


def model_configs(components: SDComponents) -> dict[str, dict]:
    """The architecture configs of the loaded networks (the LDM key tables depend on block counts)."""
    return {
        "unet": dict(components.unet.config),
        "vae": dict(components.vae.config),
        "text_encoder": components.text_encoder.config.to_dict(),
    }


def save_model(components: SDComponents, out: str | Path, *, overwrite: bool = False) -> str:
    """Write the model to `out` in the layout its name asks for; returns "ldm" or "diffusers"."""
    out = Path(out)
    layout = output_layout(out)
    if out.exists() and not overwrite:
        raise SdloraError(f"{out}: already exists; pass --overwrite to replace it")
    if layout == "ldm":
        state = ldm_state_dict(components.unet, components.vae, components.text_encoder, model_configs(components))
        out.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(out, state, {"format": "pt"})
        return layout
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        build_pipeline(components).save_pretrained(tmp, safe_serialization=True)
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return layout


def merge_into_model(base: str | Path, loras: Sequence[tuple[str | Path, float]], out: str | Path, *,
                     dtype: str | torch.dtype | None = None, overwrite: bool = False) -> dict:
    """Load `base`, fold in every (LoRA file, weight), save to `out`. Returns a report dict."""
    layout = output_layout(out)
    if Path(out).exists() and not overwrite:  # fail before the expensive part
        raise SdloraError(f"{out}: already exists; pass --overwrite to replace it")
    files = [(load_lora_file(path), float(weight), str(path)) for path, weight in loras]
    components = load_components(base, dtype=torch.float32)  # merge in fp32, cast once at the end
    layers = merge_loras(components, [(lora, weight) for (lora, _, _), weight, _ in files])
    if dtype is not None:
        components.to(dtype=parse_dtype(dtype))
    save_model(components, out, overwrite=overwrite)
    return {"base": str(base), "out": str(out), "layout": layout, "layers": layers,
            "loras": [{"file": path, "weight": weight, "format": fmt} for (_, _, fmt), weight, path in files]}
