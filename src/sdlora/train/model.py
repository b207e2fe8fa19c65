"""The base-model phase of a run: load it frozen, check the sizes it accepts, make it fast, place it.

    load_model       every weight frozen, in the run's low precision
    check_sizes      data.bucket_step / data.resolution must be multiples of the model's size step
    enable_sdpa, enable_checkpointing, speed_up_unet   how the UNet runs (not what it computes)
    place_models     UNet on the device; VAE / text encoder there, on the CPU, or released
"""
from __future__ import annotations

import gc

import torch
from torch import nn

from sdlora.config import RunConfig
from sdlora.errors import SdloraError
from sdlora.models.components import SDComponents


def load_model(name: str, dtype: torch.dtype) -> SDComponents:
    """The base model (see sdlora.models.load_components), every weight frozen."""
    from sdlora.models import load_components

    components = load_components(name, dtype=dtype)
    for module in components.modules().values():
        module.requires_grad_(False)
    return components


def size_step(components: SDComponents) -> int:
    """Pixels per smallest change of image side the model accepts: VAE factor x UNet factor (SD 1.x: 8 x 8)."""
    vae = 2 ** (len(components.vae.config.block_out_channels) - 1)
    unet = 2 ** (len(components.unet.config.down_block_types) - 1)
    return vae * unet


def check_sizes(cfg: RunConfig, components: SDComponents) -> None:
    """Refuse image sizes the model cannot take (its UNet would fail on odd latent sizes mid-run)."""
    step, data = size_step(components), cfg.data
    key, value = ("data.bucket_step", data.bucket_step) if data.buckets else ("data.resolution", data.resolution)
    if value % step:
        raise SdloraError(f"{key} = {value} does not fit this model: image sides must be multiples of {step} "
                          f"(set {key} to {max(step, value // step * step)})")


def enable_sdpa(unet: nn.Module) -> None:
    """PyTorch's fused scaled_dot_product_attention in every UNet attention layer."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())


def speed_up_unet(unet: nn.Module, *, channels_last: bool, compile: bool, backend: str) -> None:
    """Channels-last memory format and/or torch.compile in place (module and parameter names stay
    as they are, so LoRA export and checkpoints are unaffected)."""
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if compile:
        check_compile_backend(backend)
        unet.compile(backend=backend)


def check_compile_backend(backend: str) -> None:
    from torch import _dynamo

    known = _dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise SdloraError(f"train.compile_backend: {backend!r} is not a torch.compile backend here; "
                          f"use one of {', '.join(sorted(known))}")


def enable_checkpointing(components: SDComponents, text_encoder: bool) -> None:
    """Recompute activations in backward (UNet, and the text encoder when it trains)."""
    components.unet.enable_gradient_checkpointing()
    if text_encoder:
        te = components.text_encoder
        # transformers 5 renamed it (the old name warns); transformers 4 only has the old one
        enable = getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable
        enable()


def place_models(components: SDComponents, device, *, latents_cached: bool, text_cached: bool,
                 keep_for_sampling: bool) -> None:
    """UNet on the device; VAE / text encoder there only when the step still needs them, else on
    the CPU for validation samples, or released entirely when nothing will use them again."""
    components.unet.to(device)
    for module, cached in ((components.vae, latents_cached), (components.text_encoder, text_cached)):
        if not cached:
            module.to(device)
        else:
            offload(module, keep=keep_for_sampling)


def offload(module: nn.Module | None, keep: bool = True) -> None:
    """Move a frozen encoder off the accelerator: to the CPU (keep, e.g. for validation samples) or
    to the meta device, which frees its memory while the module tree (names, configs) stays."""
    if module is not None:
        module.to("cpu" if keep else "meta")
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
