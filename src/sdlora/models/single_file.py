"""SD 1.x from one original checkpoint file (.ckpt or .safetensors, CompVis/LDM key layout), offline.

The architecture comes from the bundled SD 1.4 configs, the tokenizer and scheduler are the bundled
ones, and the weights are renamed with `sdlora.models.ldm_keys`. Models are built with empty
(meta) parameters and the file's tensors are assigned in place: no second copy is ever made. Both
file types are memory-mapped copy-on-write, so fp32 weights stay file-backed pages until written
(a load in another dtype holds the cast copy plus the mapped file while casting).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

import torch
from accelerate import init_empty_weights
from torch import nn

from sdlora.errors import SdloraError
from sdlora.models.checkpoint_io import read_state_dict
from sdlora.models.components import SDComponents
from sdlora.models.ldm_keys import (
    LDM_PREFIX,
    diffusers_to_ldm,
    invert_table,
    ldm_to_diffusers,
    map_key,
    unet_table,
    vae_table,
)
from sdlora.models.names import canonical_te_path, model_te_path
from sdlora.models.architecture import build_text_encoder, build_unet, build_vae, sd14_config, sd14_scheduler
from sdlora.models.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

# Key prefixes that identify other checkpoint kinds, checked first for a precise message.
FOREIGN_MARKERS = {
    "conditioner.embedders.": "an SDXL checkpoint",
    "cond_stage_model.model.": "an SD 2.x checkpoint (OpenCLIP text encoder)",
    "model.diffusion_model.joint_blocks.": "an SD3 checkpoint",
    "double_blocks.": "a FLUX checkpoint",
    "lora_unet_": "a LoRA file, not a model (load it as a LoRA)",
    "lora_te_": "a LoRA file, not a model (load it as a LoRA)",
    "down_blocks.": "a diffusers-layout state dict (pass its diffusers folder instead)",
    "unet.": "a diffusers-layout state dict (pass its diffusers folder instead)",
    "encoder.down.": "a standalone VAE, not a full SD model",
}
# Text-encoder tensors real SD 1.x files carry that newer transformers no longer keep as state.
TE_IGNORABLE = ("text_model.embeddings.position_ids",)
COMPONENT_WHAT = {"unet": "UNet", "vae": "VAE", "text_encoder": "CLIP text encoder"}
TABLES = {"unet": unet_table, "vae": vae_table}
# Metadata key of the single files sdlora writes: the architecture configs (JSON {"unet", "vae",
# "text_encoder"}), so that a model that is not full-size SD 1.4 (sd-tiny) loads back.
ARCH_KEY = "sdlora_architecture"


def sd14_configs() -> dict[str, dict]:
    """The bundled SD 1.4 architecture configs by component (the default for single files)."""
    return {name: sd14_config(name) for name in COMPONENT_WHAT}


def architecture_metadata(configs: Mapping[str, Mapping]) -> dict[str, str]:
    """The header entry that lets load_single_file rebuild this architecture."""
    return {ARCH_KEY: json.dumps({name: dict(configs[name]) for name in COMPONENT_WHAT}, sort_keys=True, default=str)}


def file_configs(path: Path, metadata: Mapping[str, str]) -> dict[str, dict] | None:
    """The architecture a file's header names (see ARCH_KEY), checked; None when it names none."""
    text = metadata.get(ARCH_KEY)
    if not text:
        return None
    try:
        configs = json.loads(text)
    except (ValueError, RecursionError):
        configs = None
    if not isinstance(configs, dict) or not all(isinstance(configs.get(name), dict) for name in COMPONENT_WHAT):
        raise SdloraError(f"{path}: metadata {ARCH_KEY!r} is not a JSON object of unet/vae/text_encoder configs; "
                          "remove it to load the file as SD 1.4")
    return configs


def build_empty(path: Path, configs: Mapping[str, dict], from_file: bool) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Empty-weight (meta) UNet, VAE and text encoder; a config read from the file may be anything."""
    try:
        with init_empty_weights():
            return build_unet(configs["unet"]), build_vae(configs["vae"]), build_text_encoder(configs["text_encoder"])
    except Exception as err:  # noqa: BLE001 (untrusted configs reach third-party constructors)
        if not from_file:
            raise
        raise SdloraError(f"{path}: metadata {ARCH_KEY!r} does not describe a buildable SD 1.x model "
                          f"({type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:120]})") from None


def check_sd1_layout(path: Path, keys) -> None:
    """Raise SdloraError unless `keys` look like an SD 1.x LDM checkpoint with all three components."""
    keys = list(keys)
    for marker, what in FOREIGN_MARKERS.items():
        if any(k.startswith(marker) for k in keys):
            raise SdloraError(f"{path}: this is {what}; sdlora loads SD 1.x checkpoints (e.g. sd-v1-4.ckpt)")
    for component, prefix in LDM_PREFIX.items():
        if not any(k.startswith(prefix) for k in keys):
            raise SdloraError(
                f"{path}: no {COMPONENT_WHAT[component]} weights (keys starting {prefix!r}); "
                f"not a complete SD 1.x checkpoint"
            )


def _ldm_name(component: str, key: str, configs: Mapping[str, dict]) -> str:
    """The LDM key a model key comes from (for messages)."""
    if component == "text_encoder":
        return LDM_PREFIX[component] + canonical_te_path(key)
    hit = map_key(key, invert_table(TABLES[component](configs[component])))
    return LDM_PREFIX[component] + (hit[0] if hit else key)


def _check_against(path: Path, component: str, sd: dict, model: nn.Module, configs: Mapping[str, dict]) -> None:
    """One-line errors for missing / unexpected / mis-shaped weights, naming the LDM key."""
    expected = model.state_dict()
    what = COMPONENT_WHAT[component]
    missing = [k for k in expected if k not in sd]
    if missing:
        first = _ldm_name(component, missing[0], configs)
        raise SdloraError(f"{path}: {len(missing)} {what} weights missing, first {first}; a partial SD 1.x checkpoint?")
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        first = _ldm_name(component, unexpected[0], configs)
        raise SdloraError(f"{path}: {len(unexpected)} unexpected {what} weights, first {first}; not SD 1.x")
    for key, tensor in sd.items():
        if tensor.shape != expected[key].shape:
            raise SdloraError(
                f"{path}: {_ldm_name(component, key, configs)} has shape {tuple(tensor.shape)}, SD 1.x has "
                f"{tuple(expected[key].shape)}; a different architecture (e.g. an inpainting or SD 2.x model)"
            )


def _fill(path: Path, component: str, model: nn.Module, sd: dict, dtype: torch.dtype, configs) -> nn.Module:
    """Assign `sd` (model's own key names) into an empty-weight model, casting floats to `dtype`."""
    _check_against(path, component, sd, model, configs)
    for key, tensor in sd.items():
        if tensor.is_floating_point() and tensor.dtype != dtype:
            sd[key] = tensor.to(dtype)
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def _text_encoder_sd(text_encoder: nn.Module, canonical: dict) -> dict:
    """Canonical text-encoder keys -> the names this transformers version uses."""
    own = text_encoder.state_dict()
    sd = {model_te_path(text_encoder, k): v for k, v in canonical.items()}
    for key in TE_IGNORABLE:
        if model_te_path(text_encoder, key) not in own:
            sd.pop(model_te_path(text_encoder, key), None)
    return sd


def load_single_file(
    path: str | Path, dtype: torch.dtype = torch.float32, configs: Mapping[str, dict] | None = None
) -> SDComponents:
    """SDComponents from an SD 1.x .ckpt/.safetensors file (LDM layout), without any network access.

    `configs` ({"unet", "vae", "text_encoder"} architecture configs) defaults to those in the file's
    header (files sdlora writes, see ARCH_KEY), else the bundled SD 1.4 ones.
    """
    path = Path(path)
    ldm, metadata = read_state_dict(path)
    from_file = configs is None and file_configs(path, metadata) is not None
    configs = configs or file_configs(path, metadata) or sd14_configs()
    check_sd1_layout(path, ldm.keys())
    if sum(k.startswith("model_ema.") for k in ldm) > 100:
        log.info("%s: has EMA weights too; using the non-EMA ones (model.diffusion_model.*)", path.name)
    unet, vae, text_encoder = build_empty(path, configs, from_file)  # first: it checks a config read from the file
    try:
        parts = ldm_to_diffusers(ldm, configs["unet"], configs["vae"])
    except KeyError as exc:
        raise SdloraError(f"{path}: unexpected key {exc.args[0]}; not an SD 1.x architecture") from None
    del ldm  # `parts` holds the only references to the tensors now
    te_sd = _text_encoder_sd(text_encoder, parts.pop("text_encoder"))
    return SDComponents(
        tokenizer=load_tokenizer(),
        text_encoder=_fill(path, "text_encoder", text_encoder, te_sd, dtype, configs),
        vae=_fill(path, "vae", vae, parts.pop("vae"), dtype, configs),
        unet=_fill(path, "unet", unet, parts.pop("unet"), dtype, configs),
        scheduler=sd14_scheduler(),
        source=str(path),
    )


def ldm_state_dict(unet: nn.Module, vae: nn.Module, text_encoder: nn.Module, configs: Mapping[str, dict] | None = None):
    """The inverse of loading: one flat LDM-layout state dict (as sd-v1-4.ckpt has it) from three models.

    Tensors are shared with the models, except the VAE attention weights, which are (C, C, 1, 1) views.
    """
    configs = configs or sd14_configs()
    te = {canonical_te_path(k): v for k, v in text_encoder.state_dict().items()}
    models = {"unet": unet.state_dict(), "vae": vae.state_dict(), "text_encoder": te}
    return diffusers_to_ldm(models, configs["unet"], configs["vae"])
