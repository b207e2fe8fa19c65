"""sd-tiny's architecture as data: SD 1.x's classes (UNet2DConditionModel with cross-attention,
AutoencoderKL with 4 latent channels, CLIPTextModel), scaled down for 64x64 images.

The VAE downsamples 4x (64x64x3 -> 16x16x4 latents) so that small shapes stay crisp. The text
encoder keeps CLIP's 49,408-token vocabulary, so its hidden size is kept at 64 (3.2M embedding
params) and the UNet's cross-attention width follows it. fp16 sizes: UNet ~9.5 MB, text encoder
~6.7 MB, VAE ~1.9 MB (about 18 MB in all, under the 20 MB budget).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from sdlora.errors import SdloraError
from sdlora.models.architecture import build_text_encoder, build_unet, build_vae

TEXT_WIDTH = 64  # CLIP hidden size == UNet cross_attention_dim

SD_TINY: dict[str, dict] = {
    "unet": {
        "sample_size": 16,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [64, 96, 128],
        "layers_per_block": 1,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": TEXT_WIDTH,
        "attention_head_dim": 8,  # as in SD 1.4's config: diffusers reads it as 8 heads
        "norm_num_groups": 16,
    },
    "vae": {
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": [32, 64, 64],  # three blocks: two 2x downsamplings
        "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3,
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 16,
        "sample_size": 64,
        "scaling_factor": 1.0,  # replaced by 1 / latent std after VAE training
    },
    "text_encoder": {
        "vocab_size": 49408,
        "hidden_size": TEXT_WIDTH,
        "intermediate_size": 4 * TEXT_WIDTH,
        "num_attention_heads": 4,
        "num_hidden_layers": 4,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "projection_dim": TEXT_WIDTH,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    },
}

# The same classes and the same 4x VAE at the smallest useful widths: tests and dry runs only.
MICRO: dict[str, dict] = {
    "unet": {**SD_TINY["unet"], "block_out_channels": [16, 16, 32], "norm_num_groups": 8,
             "cross_attention_dim": 16, "attention_head_dim": 2},
    "vae": {**SD_TINY["vae"], "block_out_channels": [8, 16, 16], "norm_num_groups": 8},
    "text_encoder": {**SD_TINY["text_encoder"], "hidden_size": 16, "intermediate_size": 32,
                     "num_attention_heads": 2, "num_hidden_layers": 1, "projection_dim": 16},
}

ARCHS: dict[str, dict[str, dict]] = {"sd-tiny": SD_TINY, "micro": MICRO}


def arch_config(name: str) -> dict[str, dict]:
    """The component configs of architecture `name` ("sd-tiny" or "micro")."""
    if name not in ARCHS:
        raise SdloraError(f"unknown sd-tiny architecture {name!r}: use one of {sorted(ARCHS)}")
    return ARCHS[name]


def build_models(name: str, seed: int = 0) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel]:
    """Freshly initialised (unet, vae, text_encoder) of architecture `name`, fp32 on CPU."""
    config = arch_config(name)
    torch.manual_seed(seed)
    return build_unet(config["unet"]), build_vae(config["vae"]), build_text_encoder(config["text_encoder"])


def param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
