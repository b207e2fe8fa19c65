"""Image generation with SD 1.x and LoRA files: prompts (kohya prompt-file syntax), the scheduler
table, A1111-style PNG parameters, attaching/merging LoRAs, sampling, and `generate()`.

Names are imported on first use (PEP 562), so `sdlora.generate.prompts` can be read without torch.
"""
from __future__ import annotations

import importlib

# public name -> the module that defines it
EXPORTS: dict[str, str] = {
    **dict.fromkeys(["LoadedLora", "LoraSpec", "parse_lora_arg"], "loras"),
    **dict.fromkeys(["Parameters", "format_parameters", "parse_parameters", "read_parameters"], "pngmeta"),
    **dict.fromkeys(["PromptSpec", "parse_prompt_line", "read_prompt_file"], "prompts"),
    **dict.fromkeys(["GenerateJob", "GenerateResult", "generate", "load_model"], "job"),
    **dict.fromkeys(["NoiseSettings", "settings_from_metadata"], "prediction"),
    **dict.fromkeys(["Sample", "Sampler"], "sampling"),
    **dict.fromkeys(["SCHEDULERS", "make_scheduler"], "schedulers"),
}
__all__ = sorted(EXPORTS)


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module 'sdlora.generate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sdlora.generate.{EXPORTS[name]}"), name)
