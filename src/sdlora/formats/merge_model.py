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
from sdlora.fileio import make_temp_dir
from sdlora.formats import apply
from sdlora.formats.canonical import first_non_finite
from sdlora.formats.io import load_lora_file
from sdlora.models.checkpoint_io import write_safetensors
from sdlora.models.components import SDComponents
from sdlora.models.loader import load_components
from sdlora.models.pipeline import build_pipeline
from sdlora.models.single_file import architecture_metadata, ldm_state_dict

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


def claim_output(out: str | Path, inputs: Sequence[str | Path] = (), *, overwrite: bool = False) -> Path:
    """`out` as an absolute path ("." has a name then) once it is safe to write: it must not exist unless
    `overwrite`, an existing folder is replaced only when it is empty or a diffusers model, and never
    when it is or holds one of `inputs` (the base model, the LoRA files)."""
    shown, out = out, Path(out).absolute()
    if out.exists() and not overwrite:
        raise SdloraError(f"{shown}: already exists; pass --overwrite to replace it")
    if not out.is_dir():
        return out
    if out == Path.cwd().absolute():
        raise SdloraError(f"{shown}: is the current folder; name a new output folder")
    if any(out.iterdir()) and not (out / "model_index.json").is_file():
        raise SdloraError(f"{shown}: is a folder of other files, not a diffusers model; name a new output folder")
    real = out.resolve()
    for item in inputs:
        path = Path(item).expanduser()
        if path.exists() and (path.resolve() == real or real in path.resolve().parents):
            raise SdloraError(f"{shown}: holds the input {item}; write the merged model to another folder")
    return out


def check_finite_model(components: SDComponents) -> None:
    """Refuse to save a model whose weights are not all finite (an extreme LoRA can overflow them)."""
    for name, net in apply.networks(components).items():
        bad = first_non_finite(dict(net.named_parameters()))
        if bad is not None:
            raise SdloraError(f"merging made {name}.{bad} NaN or infinite; lower the LoRA weights "
                              "(nothing was written)")


def save_model(components: SDComponents, out: str | Path, *, overwrite: bool = False) -> str:
    """Write the model to `out` in the layout its name asks for; returns "ldm" or "diffusers"."""
    out = claim_output(out, overwrite=overwrite)
    layout = output_layout(out)
    if layout == "ldm":
        configs = model_configs(components)
        state = ldm_state_dict(components.unet, components.vae, components.text_encoder, configs)
        write_safetensors(out, state, {"format": "pt", **architecture_metadata(configs)})
        return layout
    tmp = make_temp_dir(out.parent, out.name)
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
    claim_output(out, [base, *(path for path, _ in loras)], overwrite=overwrite)  # before the expensive part
    files = [(load_lora_file(path), float(weight), str(path)) for path, weight in loras]
    components = load_components(base, dtype=torch.float32)  # merge in fp32, cast once at the end
    layers = merge_loras(components, [(lora, weight) for (lora, _, _), weight, _ in files])
    if dtype is not None:
        components.to(dtype=parse_dtype(dtype))
    check_finite_model(components)
    save_model(components, out, overwrite=overwrite)
    return {"base": str(base), "out": str(out), "layout": layout, "layers": layers,
            "loras": [{"file": path, "weight": weight, "format": fmt} for (_, _, fmt), weight, path in files]}
