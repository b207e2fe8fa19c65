"""Writing sd-tiny as a diffusers-layout folder of fp16 safetensors, like SD 1.4's hub folder.

The text encoder's keys are written in the canonical `text_model.` form (as SD 1.4's own file),
never in the installed transformers' naming, so the file loads under transformers 4 and 5.
"""
from __future__ import annotations

import json
from pathlib import Path

import diffusers
import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

from sdlora.errors import SdloraError
from sdlora.fileio import atomic_save_safetensors, atomic_write_text
from sdlora.models.architecture import sd14_config

MAX_BYTES = 20_000_000
TE_PREFIX = "text_model."
WEIGHT_FILES = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                "text_encoder": "model.safetensors"}


def model_index() -> dict:
    """SD 1.4's model_index.json with sdlora's component classes and no safety checker."""
    return {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def canonical_te_state_dict(text_encoder: CLIPTextModel) -> dict[str, torch.Tensor]:
    """fp16 text-encoder weights under `text_model.`-prefixed keys, whatever transformers names them."""
    state = text_encoder.state_dict()
    return {(k if k.startswith(TE_PREFIX) else TE_PREFIX + k): v.detach().to(torch.float16).contiguous().cpu()
            for k, v in state.items()}


def _save_text_encoder(text_encoder: CLIPTextModel, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    config = text_encoder.config.to_dict()
    # Load in fp32 by default, like the diffusers components (the file itself holds fp16).
    config.update(architectures=["CLIPTextModel"], dtype="float32", torch_dtype="float32")
    config.pop("transformers_version", None)
    atomic_write_text(folder / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    atomic_save_safetensors(folder / WEIGHT_FILES["text_encoder"], canonical_te_state_dict(text_encoder),
                            metadata={"format": "pt"})


def save_sd_tiny(out: Path, *, unet: UNet2DConditionModel, vae: AutoencoderKL,
                 text_encoder: CLIPTextModel, max_bytes: int = MAX_BYTES) -> dict[str, int]:
    """Write the model to `out` (modules are cast to fp16 on CPU in place); returns the
    weight-file bytes of each component. Raises SdloraError if they add up to over `max_bytes`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text_encoder.to(device="cpu", dtype=torch.float16)
    for name, module in (("unet", unet), ("vae", vae)):
        module.to(device="cpu").half().save_pretrained(out / name, safe_serialization=True)
    _save_text_encoder(text_encoder, out / "text_encoder")
    PNDMScheduler.from_config(sd14_config("scheduler")).save_pretrained(out / "scheduler")
    atomic_write_text(out / "model_index.json", json.dumps(model_index(), indent=2) + "\n")
    sizes = {name: (out / name / file).stat().st_size for name, file in WEIGHT_FILES.items()}
    if sum(sizes.values()) > max_bytes:
        raise SdloraError(f"{out}: sd-tiny weights take {sum(sizes.values()):,} bytes, over the "
                          f"{max_bytes:,} budget: shrink the architecture in sdlora/tiny/arch.py")
    return sizes
