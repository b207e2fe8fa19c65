"""Writing the trained LoRA: kohya-style `ss_*` metadata and the files in each configured format.

The LoRA goes out through sdlora.formats (extract -> canonical dict -> save_lora_file, atomic), so
the files are what A1111, ComfyUI and diffusers' load_lora_weights read. A LoRA holding a NaN/inf is
never written: an earlier good file stays in place.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from sdlora import __version__
from sdlora.config import RunConfig
from sdlora.dtypes import DTYPES as SAVE_DTYPES
from sdlora.errors import SdloraError
from sdlora.formats import save_lora_file
from sdlora.formats.apply import extract
from sdlora.lora import lora_modules
from sdlora.models.components import SDComponents


def lora_metadata(cfg: RunConfig, *, step: int, epoch: int, dataset: dict, base: str, started: float,
                  num_processes: int = 1, precision: str | None = None) -> dict[str, str]:
    """kohya's ss_* training metadata (read by A1111's and ComfyUI's LoRA info panels) plus sdlora's."""
    t, lora = cfg.train, cfg.lora
    res = cfg.data.resolution
    return {
        "ss_sd_model_name": base,
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(lora.rank),
        "ss_network_alpha": f"{lora.alpha if lora.alpha is not None else lora.rank:g}",
        "ss_learning_rate": f"{t.lr:g}",
        "ss_unet_lr": f"{t.lr:g}",
        "ss_text_encoder_lr": f"{t.text_encoder_lr:g}" if lora.train_text_encoder else "0",
        "ss_lr_scheduler": t.lr_scheduler,
        "ss_lr_warmup_steps": str(t.warmup_steps),
        "ss_optimizer": t.optimizer,
        "ss_max_train_steps": str(t.steps),
        "ss_steps": str(step),
        "ss_epoch": str(epoch),
        "ss_num_epochs": str(t.epochs if t.epochs is not None else epoch),
        "ss_batch_size_per_device": str(t.batch_size),
        "ss_gradient_accumulation_steps": str(t.grad_accum),
        "ss_total_batch_size": str(t.batch_size * t.grad_accum * num_processes),
        "ss_resolution": f"({res}, {res})",
        "ss_enable_bucket": str(cfg.data.buckets),
        "ss_mixed_precision": precision or t.mixed_precision,  # the resolved one, not `auto`
        "ss_seed": str(t.seed),
        "ss_noise_offset": f"{t.noise_offset:g}",
        "ss_min_snr_gamma": f"{t.min_snr_gamma:g}" if t.min_snr_gamma else "None",
        "ss_prior_loss_weight": f"{t.prior_loss_weight:g}",
        "ss_max_grad_norm": f"{t.max_grad_norm:g}",
        "ss_gradient_checkpointing": str(t.gradient_checkpointing),
        "ss_cache_latents": str(cfg.data.cache_latents != "off"),
        "ss_num_train_images": str(dataset.get("images", 0)),
        "ss_num_reg_images": str(dataset.get("class_images", 0)),
        "ss_dataset_dirs": json.dumps({s["path"]: {"n_repeats": 1, "img_count": s["images"]}
                                       for s in dataset.get("sources", [])}),
        "ss_training_started_at": f"{started:.0f}",
        "ss_training_finished_at": f"{time.time():.0f}",
        "ss_output_name": cfg.save.name,
        "sdlora_version": __version__,
        "sdlora_dataset": json.dumps(dataset, sort_keys=True),
    }


def lora_filenames(cfg: RunConfig) -> dict[str, str]:
    """{format: file name}: the first format gets `<name>.safetensors`, others `<name>.<format>.safetensors`."""
    stem = cfg.save.name
    return {fmt: f"{stem}.safetensors" if i == 0 else f"{stem}.{fmt}.safetensors"
            for i, fmt in enumerate(dict.fromkeys(cfg.save.formats))}


def check_finite(lora: dict[str, torch.Tensor]) -> None:
    bad = next((k for k, t in lora.items() if not torch.isfinite(t).all()), None)
    if bad is not None:
        raise SdloraError(f"refusing to save a LoRA with NaN/inf weights ({bad}); the previous file is kept")


def save_lora(folder: str | Path, components: SDComponents, cfg: RunConfig, metadata: dict[str, str]) -> list[Path]:
    """Write the LoRA in every configured format into `folder`; returns the paths."""
    lora = extract(components)
    dtype = SAVE_DTYPES[cfg.save.precision]
    check_finite({k: t.to(dtype) for k, t in lora.items()})  # also catches values fp16 cannot hold
    return [save_lora_file(Path(folder) / name, lora, metadata, fmt, dtype)
            for fmt, name in lora_filenames(cfg).items()]


@torch.no_grad()
def delta_norm(components: SDComponents, adapter: str = "default") -> float:
    """Frobenius norm of the LoRA's total weight change (DoRA included): ~0 means no effect."""
    total = 0.0
    for model in (components.unet, components.text_encoder):
        for wrapper in lora_modules(model).values():
            if adapter in wrapper.adapters:
                total += float(wrapper.delta_weight(adapter).pow(2).sum())
    return math.sqrt(total)


@torch.no_grad()
def base_norm(components: SDComponents) -> float:
    """Frobenius norm of the frozen weights that carry LoRA (the scale delta_norm is judged against)."""
    total = 0.0
    for model in (components.unet, components.text_encoder):
        for wrapper in lora_modules(model).values():
            total += float(wrapper.base.weight.detach().float().pow(2).sum())
    return math.sqrt(total)
