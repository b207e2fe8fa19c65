"""SD 1.x from a local folder in diffusers layout (model_index.json, unet/, vae/, text_encoder/, ...).

unet/, vae/ and text_encoder/ are required. tokenizer/ and scheduler/ fall back to the bundled
SD 1.4 ones when absent (the bundled sd-tiny ships without a tokenizer). Loading never touches the
network: every from_pretrained call gets a local folder and local_files_only=True.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
)
from safetensors import SafetensorError
from transformers import CLIPTextModel, CLIPTokenizer

from sdlora.errors import SdloraError
from sdlora.models.component_files import read_network, regular_files_only
from sdlora.models.components import SDComponents
from sdlora.models.architecture import build_unet, sd14_scheduler
from sdlora.models.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

REQUIRED = ("unet", "vae", "text_encoder")
# Scheduler classes a diffusers SD 1.x folder may name in scheduler/scheduler_config.json.
SCHEDULERS = {
    cls.__name__: cls
    for cls in (
        PNDMScheduler,
        DDIMScheduler,
        DDPMScheduler,
        EulerDiscreteScheduler,
        EulerAncestralDiscreteScheduler,
        LMSDiscreteScheduler,
        DPMSolverMultistepScheduler,
    )
}
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, SafetensorError, json.JSONDecodeError)


def check_folder(folder: Path) -> None:
    missing = [f"{name}/" for name in REQUIRED if not (folder / name).is_dir()]
    if missing:
        raise SdloraError(
            f"{folder}: not a diffusers SD model folder, missing {', '.join(missing)} "
            f"(expected unet/, vae/, text_encoder/, and optionally tokenizer/, scheduler/)"
        )


def _variant(part: Path) -> str | None:
    """'fp16' when the folder only has *.fp16.* weight files (diffusers then needs variant='fp16')."""
    files = [p.name for p in part.iterdir() if p.suffix in (".safetensors", ".bin")]
    plain = [n for n in files if n.count(".") == 1]
    return "fp16" if not plain and any(".fp16." in n for n in files) else None


def _load_part(cls, part: Path, **kwargs):
    regular_files_only(part)
    try:
        return cls.from_pretrained(str(part), local_files_only=True, **kwargs)
    except LOAD_ERRORS as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SdloraError(f"{part}: could not load {part.name} ({cls.__name__}): {first}") from None


def load_scheduler(part: Path):
    config_file = part / "scheduler_config.json"
    regular_files_only(part)
    try:
        config = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SdloraError(f"{config_file}: unreadable scheduler config: {exc}") from None
    cls = SCHEDULERS.get(config.get("_class_name"))
    if cls is None:
        raise SdloraError(
            f"{config_file}: unknown scheduler {config.get('_class_name')!r}; one of {', '.join(SCHEDULERS)} expected"
        )
    return cls.from_config(config)


def _read_unet(part: Path, dtype: torch.dtype):
    """The UNet cast to a low precision one tensor at a time (sdlora.models.component_files.read_network);
    fp32 keeps diffusers' memory-mapped load (no copy at all)."""
    if dtype == torch.float32:
        return None
    unet = read_network(part, build_unet, dtype)
    return unet.eval() if unet is not None else None


def load_folder(folder: str | Path, dtype: torch.dtype = torch.float32, source: str | None = None) -> SDComponents:
    """SDComponents from a diffusers-layout folder, weights cast to `dtype`."""
    folder = Path(folder)
    check_folder(folder)
    unet = _read_unet(folder / "unet", dtype) or _load_part(UNet2DConditionModel, folder / "unet", torch_dtype=dtype,
                                                          variant=_variant(folder / "unet"))
    vae = _load_part(AutoencoderKL, folder / "vae", torch_dtype=dtype, variant=_variant(folder / "vae"))
    # transformers 4 and 5 disagree on the dtype keyword; the text encoder is small, cast it after.
    text_encoder = _load_part(CLIPTextModel, folder / "text_encoder", variant=_variant(folder / "text_encoder"))
    text_encoder = text_encoder.to(dtype)
    if (folder / "tokenizer").is_dir():
        tokenizer = _load_part(CLIPTokenizer, folder / "tokenizer")
    else:
        log.debug("%s: no tokenizer/, using the bundled CLIP tokenizer", folder)
        tokenizer = load_tokenizer()
    scheduler = load_scheduler(folder / "scheduler") if (folder / "scheduler").is_dir() else sd14_scheduler()
    return SDComponents(tokenizer, text_encoder.eval(), vae.eval(), unet.eval(), scheduler, source or str(folder))
