"""What is in a LoRA file: its key layout (kohya / diffusers / native), and files we must refuse.

Refusals are decided from tables, before any conversion, so that a file for another base model or
a LyCORIS-only network type is rejected whole with a message naming what it is: never a silent
partial load.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from sdlora.errors import SdloraError
from sdlora.lora.keys import DOTTED as NATIVE_PARAMS
from sdlora.lora.native import FORMAT_KEY

DIFFUSERS_COMPONENTS = ("unet.", "text_encoder.")

# Parameter-name fragments of network types that only LyCORIS implements (LoHa and LoKr sdlora reads:
# their factor names are in sdlora.lora.keys.FACTOR_SUFFIXES).
LYCORIS_PARAMS: dict[str, str] = {
    "lora_mid": "LoCon with Tucker decomposition (lora_mid)",
    "oft_blocks": "OFT", "oft_diag": "OFT", "oft_R": "BOFT",
    "diff": "full weight difference (LyCORIS 'full')", "diff_b": "full weight difference (LyCORIS 'full')",
    "w_norm": "norm-layer finetune", "b_norm": "norm-layer finetune",
    "on_input": "(IA)^3", "a1": "GLoRA", "a2": "GLoRA", "b1": "GLoRA", "b2": "GLoRA",
}

# Key prefixes that only occur in LoRAs for other base models.
OTHER_BASE_PREFIXES: dict[str, str] = {
    "lora_te1_": "SDXL", "lora_te2_": "SDXL", "lora_te3_": "SD 3",
    "lora_unet_input_blocks_": "SDXL", "lora_unet_middle_block_": "SDXL", "lora_unet_output_blocks_": "SDXL",
    "lora_unet_label_emb_": "SDXL", "lora_unet_double_blocks_": "Flux", "lora_unet_single_blocks_": "Flux",
    "lora_transformer_": "SD 3 / Flux", "text_encoder_2.": "SDXL", "transformer.": "SD 3 / Flux",
}

# Input width of the cross-attention key/value projections and of the text encoder's attention:
# 768 for SD 1.x; these widths mean another base.
OTHER_BASE_WIDTHS: dict[int, str] = {1024: "SD 2.x", 1280: "SDXL", 2048: "SDXL"}
WIDTH_PROBES = ("attn2_to_k", "attn2_to_v", "attn2.to_k", "attn2.to_v", "self_attn_q_proj", "self_attn.q_proj")

# (metadata key, value prefix) -> base model, for files that say what they were trained on.
OTHER_BASE_METADATA: dict[tuple[str, str], str] = {
    ("ss_base_model_version", "sdxl"): "SDXL", ("ss_base_model_version", "sd_v2"): "SD 2.x",
    ("ss_base_model_version", "sd3"): "SD 3", ("ss_base_model_version", "flux"): "Flux",
    ("ss_v2", "True"): "SD 2.x",
    ("modelspec.architecture", "stable-diffusion-xl"): "SDXL",
    ("modelspec.architecture", "stable-diffusion-v2"): "SD 2.x",
    ("modelspec.architecture", "stable-diffusion-3"): "SD 3", ("modelspec.architecture", "flux"): "Flux",
}


def _param_names(key: str) -> list[str]:
    """Candidate parameter names of a key: its last dotted segment, and the one before `.weight`."""
    parts = key.split(".")
    return [parts[-1]] + ([parts[-2]] if len(parts) > 1 and parts[-1] in ("weight", "bias") else [])


def lycoris_types(keys) -> dict[str, str]:
    """{network type: first key} for the LyCORIS-only parameters among `keys`."""
    found: dict[str, str] = {}
    for key in keys:
        for name in _param_names(key):
            if name in LYCORIS_PARAMS:
                found.setdefault(LYCORIS_PARAMS[name], key)
    return found


def other_base(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> tuple[str, str] | None:
    """(base model, evidence) when the file is for a base other than SD 1.x, else None."""
    for (field, prefix), base in OTHER_BASE_METADATA.items():
        if str(metadata.get(field, "")).startswith(prefix):
            return base, f"metadata {field}={metadata[field]!r}"
    for key in state:
        for prefix, base in OTHER_BASE_PREFIXES.items():
            if key.startswith(prefix):
                return base, f"key {key!r}"
    for key, tensor in state.items():
        is_down = key.endswith(("lora_down.weight", "lora_A.weight", "lora.down.weight"))
        if is_down and tensor.dim() == 2 and any(p in key for p in WIDTH_PROBES):
            width = int(tensor.shape[1])
            if width in OTHER_BASE_WIDTHS:
                return OTHER_BASE_WIDTHS[width], f"{key} has input width {width} (SD 1.x: 768)"
    return None


def refuse_unsupported(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], source: str) -> None:
    """Raise SdloraError for a file made for another base model or holding LyCORIS-only types."""
    base = other_base(state, metadata)
    if base is not None:
        raise SdloraError(f"{source}: this LoRA is for {base[0]}, not SD 1.x ({base[1]}); "
                          "use a LoRA made for Stable Diffusion 1.x")
    kinds = lycoris_types(state)
    if kinds:
        listed = "; ".join(f"{kind} (e.g. {key!r})" for kind, key in kinds.items())
        raise SdloraError(f"{source}: LyCORIS-only network types are not supported: {listed}. "
                          "Only LoRA/LoCon (lora_down/lora_up), LoHa (hada_*) and LoKr (lokr_*) files can be loaded")


def detect_format(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> str:
    """"kohya", "diffusers" or "native" from the key layout; SdloraError when it is none of them."""
    keys = list(state)
    if not keys:
        raise SdloraError("the file holds no tensors, so it is not a LoRA")
    if all(k.startswith("lora_") for k in keys):
        return "kohya"
    if all(k.startswith(DIFFUSERS_COMPONENTS) for k in keys):
        return "native" if all(k.endswith(NATIVE_PARAMS) for k in keys) else "diffusers"
    if FORMAT_KEY in (metadata or {}):  # sdlora.lora.save_native of one model: keys without a component
        return "native"
    kohya = [k for k in keys if k.startswith("lora_")]
    example = next((k for k in keys if not k.startswith(("lora_",) + DIFFUSERS_COMPONENTS)), None)
    what = f"e.g. {example!r}" if example else f"kohya keys like {kohya[0]!r} mixed with diffusers keys"
    raise SdloraError(f"unrecognised LoRA key layout ({what}); expected kohya keys (lora_unet_..., lora_te_...) "
                      "or diffusers keys (unet...., text_encoder....)")
