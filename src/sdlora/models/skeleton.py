"""Stand-ins for SD 1.4 built in code (no download): the full-size architecture with random
weights, and tiny SD-architecture models for fast tests.

Full size (bundled SD 1.4 configs): UNet 859,520,964 params, VAE 83,653,863, CLIP text 123,060,480.
The configs and builders themselves are production code: sdlora.models.architecture.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from sdlora.models.architecture import (  # noqa: F401 (re-exported for the stand-ins' users)
    SD14_CONFIG_DIR,
    build_text_encoder,
    build_unet,
    build_vae,
    sd14_config,
    sd14_scheduler,
)
from sdlora.models.components import SDComponents
from sdlora.models.tokenizer import load_tokenizer

# Tiny SD-architecture configs: the same block types as SD 1.4, a few thousand times smaller.
TINY_UNET = {
    "block_out_channels": [32, 64],
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "layers_per_block": 1,
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
    "norm_num_groups": 8,
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
}
TINY_VAE = {
    "block_out_channels": [16, 32],
    "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
    "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 16,
    "scaling_factor": 0.18215,
}
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "quick_gelu",
    "projection_dim": 32,
}


def sd14_unet(seed: int = 0) -> UNet2DConditionModel:
    """Full-size SD 1.4 UNet with random weights (about 3.4 GB in fp32)."""
    torch.manual_seed(seed)
    return build_unet(sd14_config("unet"))


def sd14_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return build_vae(sd14_config("vae"))


def sd14_text_encoder(seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    return build_text_encoder(sd14_config("text_encoder"))


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return build_unet(TINY_UNET)


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return build_vae(TINY_VAE)


def tiny_text_encoder(seed: int = 0) -> CLIPTextModel:
    torch.manual_seed(seed)
    return build_text_encoder(TINY_TEXT)


def tiny_components(seed: int = 0) -> SDComponents:
    """Tiny random SD-architecture model with the real tokenizer and SD 1.4's scheduler (fast tests).

    The text encoder keeps CLIP's 49,408-token vocabulary so that any prompt tokenizes; its hidden size
    (32) is the UNet's cross-attention width.
    """
    return SDComponents(
        tokenizer=load_tokenizer(),
        text_encoder=tiny_text_encoder(seed),
        vae=tiny_vae(seed + 1),
        unet=tiny_unet(seed + 2),
        scheduler=sd14_scheduler(),
        source=f"tiny-random:seed={seed}",
    )
