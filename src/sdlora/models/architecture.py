"""The SD 1.x architecture from configs: the bundled SD 1.4 configs and the builders that turn a config
into an (untrained) network. Production code reads these (single-file loading, key tables, the
tokenizer settings); the random stand-ins for tests live in sdlora.models.skeleton.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

SD14_CONFIG_DIR = "configs/sd14"


@lru_cache(maxsize=None)
def sd14_config(component: str) -> dict:
    """The bundled SD 1.4 config of `component` (unet, vae, text_encoder, scheduler, tokenizer_config)."""
    text = resources.files("sdlora.models").joinpath(SD14_CONFIG_DIR, f"{component}.json").read_text()
    return json.loads(text)


def build_unet(config: dict) -> UNet2DConditionModel:
    return UNet2DConditionModel.from_config(config)


def build_vae(config: dict) -> AutoencoderKL:
    return AutoencoderKL.from_config(config)


def build_text_encoder(config: dict) -> CLIPTextModel:
    fields = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
    return CLIPTextModel(CLIPTextConfig(**fields))


def sd14_scheduler() -> PNDMScheduler:
    """SD 1.4's noise scheduler (PNDM, scaled_linear betas, 1000 steps) from the bundled config."""
    return PNDMScheduler.from_config(sd14_config("scheduler"))
