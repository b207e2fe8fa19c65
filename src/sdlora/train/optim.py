"""Optimizer parameter groups (separate UNet / text-encoder rates, LoRA+), optimizers and LR schedules.

LoRA+ (Hayou et al. 2024) trains `up` faster than `down`: up weights get lr * ratio. DoRA
magnitudes train at the base rate. Schedules are pure functions of the step (`lr_factor`), wrapped
in a LambdaLR, so the rate at step k is the same whether or not the run was resumed.
"""
from __future__ import annotations

import importlib
import math

import torch
from torch import nn

from sdlora.config import TrainConfig
from sdlora.errors import SdloraError
from sdlora.lora.adapter import LoRAAdapter
from sdlora.lora.inject import lora_modules

# optimizer name -> (module, class, pip extra that installs it)
OPTIMIZERS: dict[str, tuple[str, str, str | None]] = {
    "adamw": ("torch.optim", "AdamW", None),
    "adamw8bit": ("bitsandbytes.optim", "AdamW8bit", "bnb"),
    "prodigy": ("prodigyopt", "Prodigy", "prodigy"),
}


def _up_weights(model: nn.Module) -> set[int]:
    """ids of every adapter's `up` weight in `model` (the LoRA+ fast group)."""
    return {id(ad.up.weight) for wrapper in lora_modules(model).values() for ad in wrapper.adapters.values()
            if isinstance(ad, LoRAAdapter)}  # LoHa / LoKr have no `up`: all their factors take the base rate


def param_groups(models: dict[str, nn.Module], cfg: TrainConfig) -> list[dict]:
    """Groups of trainable parameters: {"params", "lr", "name"} per (component, up/rest).

    models: {"unet": ..., "text_encoder": ...}; only parameters with requires_grad are taken.
    """
    base_lr = {"unet": cfg.lr, "text_encoder": cfg.text_encoder_lr}
    groups = []
    for component, model in models.items():
        rest, up = [], []
        fast = _up_weights(model) if cfg.loraplus_ratio > 0 else set()
        for p in model.parameters():
            if p.requires_grad:
                (up if id(p) in fast else rest).append(p)
        lr = base_lr[component]
        if rest:
            groups.append({"params": rest, "lr": lr, "name": component})
        if up:
            groups.append({"params": up, "lr": lr * cfg.loraplus_ratio, "name": f"{component}.up"})
    if not groups:
        raise SdloraError("nothing to train: no LoRA parameter requires grad (check lora.unet_preset)")
    return groups


def _import_optimizer(name: str):
    if name not in OPTIMIZERS:
        raise SdloraError(f"train.optimizer {name!r} is not one of {', '.join(OPTIMIZERS)}")
    module, cls, extra = OPTIMIZERS[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError:
        raise SdloraError(f"train.optimizer = {name!r} needs an optional package: "
                          f"pip install 'sdlora[{extra}]'") from None


def build_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over `groups` (their own lr values are kept)."""
    cls = _import_optimizer(cfg.optimizer)
    kwargs = {"lr": groups[0]["lr"], "betas": tuple(cfg.betas), "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "adamw":
        # foreach: one fused kernel launch per group instead of one per tensor (many small LoRA tensors)
        kwargs["foreach"] = True
    if cfg.optimizer == "prodigy" and cfg.lr < 0.1:
        raise SdloraError(f"train.lr = {cfg.lr:g} with prodigy: Prodigy adapts the step size itself; "
                          "set train.lr = 1.0 (and train.text_encoder_lr = 1.0)")
    return cls(groups, **kwargs)


def lr_factor(step: int, *, kind: str, total: int, warmup: int = 0, cycles: int = 1) -> float:
    """Multiplier of the base LR at optimizer step `step` (0-based): linear warmup, then `kind`."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if kind == "cosine_with_restarts":
        if progress >= 1.0:
            return 0.0
        return 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0)))
    raise SdloraError(f"train.lr_scheduler {kind!r} is not one of constant, cosine, linear, cosine_with_restarts")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """A LambdaLR over lr_factor (its state is just the step count, saved with the checkpoint); a group
    with a `stop_step` (the embeddings', train/embeddings.py) gets rate 0 from that step on."""
    lr_factor(0, kind=cfg.lr_scheduler, total=total_steps)  # validates the name up front

    def factor(step: int) -> float:
        return lr_factor(step, kind=cfg.lr_scheduler, total=total_steps, warmup=cfg.warmup_steps,
                         cycles=cfg.lr_cycles)

    def until(stop: int):
        return lambda step: factor(step) if step < stop else 0.0

    stops = [group.get("stop_step") for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor if s is None else until(s) for s in stops])
