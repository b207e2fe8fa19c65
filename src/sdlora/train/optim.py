"""Optimizer parameter groups (separate UNet / text-encoder rates, per-block rates, LoRA+), the
optimizer table and LR schedules.

LoRA+ (Hayou et al. 2024) trains `up` faster than `down`: up weights get lr * ratio. DoRA
magnitudes train at the base rate. Per-block rates (kohya's down/mid/up_lr_weight) multiply the UNet
rate block by block. Optimizers are a table (name -> module, class, pip extra, which train.* settings
they take) plus any `module.Class`; train.optimizer_args are passed as keyword arguments. Schedule-free
optimizers keep a train/eval switch: `averaged_weights` holds eval mode around sampling and saving.
Schedules are pure functions of the step (`lr_factor`), wrapped
in a LambdaLR, so the rate at step k is the same whether or not the run was resumed.
"""
from __future__ import annotations

import importlib
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from sdlora.config import TrainConfig
from sdlora.errors import SdloraError
from sdlora.lora.adapter import LoRAAdapter
from sdlora.lora.blocks import block_of
from sdlora.lora.inject import lora_modules

@dataclass(frozen=True)
class OptimizerSpec:
    """Where an optimizer class lives, the pip extra that installs it, which train.* settings it takes
    (`lr`, `betas`, `eps`, `weight_decay`), its fixed keyword arguments (optimizer_args win over both) and
    whether it schedules the rate itself (schedule-free: train.warmup_steps goes to its own warmup)."""

    module: str
    cls: str
    extra: str | None
    takes: tuple[str, ...]
    fixed: tuple[tuple[str, object], ...] = ()
    own_schedule: bool = False


ADAM = ("lr", "betas", "eps", "weight_decay")
# fused: a group's whole update in one kernel (2-4x faster than foreach for the many small LoRA tensors on
# the CPU, benchmarks/RESULTS.md); optimizer_kwargs falls back to foreach where fused cannot run
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adamw": OptimizerSpec("torch.optim", "AdamW", None, ADAM, (("fused", True),)),
    "adamw8bit": OptimizerSpec("bitsandbytes.optim", "AdamW8bit", "bnb", ADAM),
    "prodigy": OptimizerSpec("prodigyopt", "Prodigy", "prodigy", ADAM),
    "lion": OptimizerSpec("lion_pytorch", "Lion", "lion", ("lr", "weight_decay")),  # its own betas (0.9, 0.99)
    "adafactor": OptimizerSpec("transformers.optimization", "Adafactor", None, ("lr", "weight_decay"),
                               (("relative_step", True), ("scale_parameter", True), ("warmup_init", False))),
    "adamw_schedulefree": OptimizerSpec("schedulefree", "AdamWScheduleFree", "schedulefree", ADAM, own_schedule=True),
}


def optimizer_spec(name: str) -> OptimizerSpec:
    """The table's entry, or a `module.Class` path taking only lr (and optimizer_args)."""
    if name in OPTIMIZERS:
        return OPTIMIZERS[name]
    module, _, cls = name.rpartition(".")
    if not module:
        raise SdloraError(f"train.optimizer {name!r} is not one of {', '.join(OPTIMIZERS)} or a `module.Class` path")
    return OptimizerSpec(module, cls, None, ("lr",))


def _up_weights(model: nn.Module) -> set[int]:
    """ids of every adapter's `up` weight in `model` (the LoRA+ fast group)."""
    return {id(ad.up.weight) for wrapper in lora_modules(model).values() for ad in wrapper.adapters.values()
            if isinstance(ad, LoRAAdapter)}  # LoHa / LoKr have no `up`: all their factors take the base rate


def _blocks(model: nn.Module, block_lr: dict[str, float] | None) -> dict[int, str]:
    """id of each adapter parameter -> its UNet block, when per-block rates are set."""
    if block_lr is None:
        return {}
    return {id(p): block for path, wrapper in lora_modules(model).items()
            if (block := block_of("unet", path)) is not None for p in wrapper.adapters.parameters()}


def param_groups(models: dict[str, nn.Module], cfg: TrainConfig,
                 block_lr: dict[str, float] | None = None) -> list[dict]:
    """Groups of trainable parameters: {"params", "lr", "name"} per (component[, block], up/rest).

    models: {"unet": ..., "text_encoder": ...}; only parameters with requires_grad are taken.
    block_lr: {UNet block: lr multiplier} (lora.*_lr_weight), one group per block of the UNet.
    """
    base_lr = {"unet": cfg.lr, "text_encoder": cfg.text_encoder_lr}
    groups: dict[str, dict] = {}
    for component, model in models.items():
        fast = _up_weights(model) if cfg.loraplus_ratio > 0 else set()
        blocks = _blocks(model, block_lr) if component == "unet" else {}
        for p in model.parameters():
            if not p.requires_grad:
                continue
            block = blocks.get(id(p))
            lr = base_lr[component] * (block_lr[block] if block is not None else 1.0)
            name = component + (f".{block}" if block is not None else "")
            if id(p) in fast:
                name, lr = f"{name}.up", lr * cfg.loraplus_ratio
            groups.setdefault(name, {"params": [], "lr": lr, "name": name})["params"].append(p)
    if not groups:
        raise SdloraError("nothing to train: no LoRA parameter requires grad (check lora.unet_preset)")
    return list(groups.values())


def _import_optimizer(name: str, spec: OptimizerSpec):
    try:
        cls = getattr(importlib.import_module(spec.module), spec.cls)
    except ImportError as exc:
        if spec.extra is None and name not in OPTIMIZERS:
            raise SdloraError(f"train.optimizer = {name!r}: cannot import {spec.module} ({exc})") from None
        hint = f"pip install 'sdlora[{spec.extra}]'" if spec.extra else f"pip install the package of {spec.module}"
        raise SdloraError(f"train.optimizer = {name!r} needs an optional package: {hint}") from None
    except AttributeError:
        raise SdloraError(f"train.optimizer = {name!r}: {spec.module} has no {spec.cls}") from None
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise SdloraError(f"train.optimizer = {name!r} is not a torch.optim.Optimizer class")
    return cls


def optimizer_kwargs(groups: list[dict], cfg: TrainConfig, spec: OptimizerSpec) -> dict:
    """The keyword arguments of the optimizer: the train.* settings it takes, fixed ones, optimizer_args."""
    common = {"lr": groups[0]["lr"], "betas": tuple(cfg.betas), "eps": cfg.eps, "weight_decay": cfg.weight_decay}
    kwargs = {**{k: common[k] for k in spec.takes}, **dict(spec.fixed), **cfg.optimizer_args}
    if kwargs.get("fused") and "fused" not in cfg.optimizer_args and not _fusable(groups, cfg.optimizer_args):
        del kwargs["fused"]
        kwargs.setdefault("foreach", True)
    if kwargs.get("relative_step"):  # Adafactor sets its own step size: it refuses an lr
        kwargs["lr"] = None
    if spec.own_schedule:
        kwargs.setdefault("warmup_steps", cfg.warmup_steps)  # schedule-free warms up itself
    return kwargs


def _fusable(groups: list[dict], optimizer_args: dict) -> bool:
    """torch's fused kernels run here: floating-point parameters on the CPU or CUDA, foreach not asked for."""
    on = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    return on and "foreach" not in optimizer_args


def check_combination(cfg: TrainConfig, spec: OptimizerSpec, kwargs: dict) -> None:
    """Settings that an optimizer would silently ignore or fight are refused, naming the key."""
    if cfg.optimizer == "prodigy" and cfg.lr < 0.1:
        raise SdloraError(f"train.lr = {cfg.lr:g} with prodigy: Prodigy adapts the step size itself; "
                          "set train.lr = 1.0 (and train.text_encoder_lr = 1.0)")
    own = ("adafactor's relative_step" if kwargs.get("relative_step") else
           cfg.optimizer if spec.own_schedule else None)
    if own is None:
        return
    if cfg.lr_scheduler != "constant":
        raise SdloraError(f"train.lr_scheduler = {cfg.lr_scheduler!r} with {own}: it sets its own schedule; "
                          "use train.lr_scheduler = \"constant\"")
    if kwargs.get("relative_step") and (cfg.warmup_steps or cfg.loraplus_ratio):
        key = "train.warmup_steps" if cfg.warmup_steps else "train.loraplus_ratio"
        raise SdloraError(f"{key} with {own}: the step size is Adafactor's own; set it to 0, or set "
                          "train.optimizer_args.relative_step = false to use train.lr")


def build_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer over `groups` (their own lr values are kept), in training mode."""
    spec = optimizer_spec(cfg.optimizer)
    cls = _import_optimizer(cfg.optimizer, spec)
    kwargs = optimizer_kwargs(groups, cfg, spec)
    check_combination(cfg, spec, kwargs)
    try:
        optimizer = cls(groups, **kwargs)
    except (TypeError, ValueError) as exc:
        raise SdloraError(f"train.optimizer_args: {cfg.optimizer} refused {sorted(kwargs)}: {exc}") from None
    if keeps_train_mode(optimizer):
        optimizer.train()  # schedule-free optimizers step only in training mode
    return optimizer


def keeps_train_mode(optimizer) -> bool:
    """True for optimizers with a train/eval switch (schedule-free: the weights to use are an average)."""
    return "train_mode" in optimizer.param_groups[0] and callable(getattr(optimizer, "eval", None))


@contextmanager
def averaged_weights(optimizer):
    """The weights to sample, validate and save with: schedule-free optimizers train at an interpolated
    point and keep the average apart, so switch to eval mode here; afterwards the training weights are
    put back bit for bit (eval() then train() rounds), so validation never changes training."""
    if not keeps_train_mode(optimizer) or not optimizer.param_groups[0]["train_mode"]:
        yield
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    kept = [p.detach().clone() for p in params]
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()
        with torch.no_grad():
            for p, saved in zip(params, kept):
                p.copy_(saved)


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
    """A LambdaLR over lr_factor (its state is just the step count, saved with the checkpoint); an
    optimizer that schedules itself (schedule-free) does its own warmup; a group with a `stop_step`
    (the embeddings', train/embeddings.py) gets rate 0 from that step on."""
    lr_factor(0, kind=cfg.lr_scheduler, total=total_steps)  # validates the name up front
    warmup = 0 if optimizer_spec(cfg.optimizer).own_schedule else cfg.warmup_steps

    def factor(step: int) -> float:
        return lr_factor(step, kind=cfg.lr_scheduler, total=total_steps, warmup=warmup,
                         cycles=cfg.lr_cycles)

    def until(stop: int):
        return lambda step: factor(step) if step < stop else 0.0

    stops = [group.get("stop_step") for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor if s is None else until(s) for s in stops])
