"""sdlora.lora: LoRA written from scratch in PyTorch (no Stable Diffusion knowledge here but presets).

    inject(model, "unet-attn", rank=4)      # wrap targets, returns {path: wrapper}
    mark_only_lora_trainable(model)         # train
    save_native(path, lora_state_dict(model), native_metadata(rank=4, ...))
    remove(model)                           # the original module tree, exactly
"""
from sdlora.lora.inject import (
    adapter_names,
    inject,
    inject_modules,
    lora_modules,
    merge_lora,
    multiplier,
    remove,
    set_multiplier,
    unmerge_lora,
)
from sdlora.lora.adapter import LoRAAdapter
from sdlora.lora.layers import LoRAConv2d, LoRALinear, LoRAModule, wrapper_for
from sdlora.lora.native import load_native, native_metadata, save_native
from sdlora.lora.presets import PRESETS, resolve_targets
from sdlora.lora.state import (
    count_trainable,
    inject_from_state_dict,
    load_lora_state_dict,
    lora_plan,
    lora_state_dict,
    mark_only_lora_trainable,
)

__all__ = [
    "LoRAAdapter", "LoRAConv2d", "LoRALinear", "LoRAModule", "PRESETS", "adapter_names",
    "count_trainable", "inject", "inject_from_state_dict", "inject_modules", "load_lora_state_dict",
    "load_native", "lora_modules", "lora_plan", "lora_state_dict", "mark_only_lora_trainable",
    "merge_lora", "multiplier", "native_metadata", "remove", "resolve_targets", "save_native", "set_multiplier",
    "unmerge_lora", "wrapper_for",
]
