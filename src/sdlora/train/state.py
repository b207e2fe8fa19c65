"""The training state saved with a checkpoint (state.pt) and how a run is restored from it.

    {"version", "step", "stream": {epoch, global_position, num_replicas}, "lora": {name: fp32 tensor},
     "optimizer", "scheduler", "scaler", "guard", "rng", "num_processes", "config": resolved TOML,
     "ema": {"updates", "shadow": {name: fp32 tensor}} or None (train/ema.py),
     "precision": the mode the run trained in ("no", "bf16", "fp16"; older states lack it)}

Everything is tensors, numbers, strings, lists and dicts, so it loads with torch.load(weights_only=True)
(no pickle code execution). LoRA tensors are keyed "<component>.<parameter name>" and restored strictly.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from sdlora.errors import SdloraError
from sdlora.train import rng
from sdlora.train.checkpoint import STATE_VERSION

log = logging.getLogger("sdlora.train")


def trainable(models: dict[str, nn.Module]) -> dict[str, nn.Parameter]:
    """The live trainable parameters keyed "<component>.<parameter name>" (the LoRA's and the EMA's keys)."""
    return {f"{component}.{name}": p for component, model in models.items()
            for name, p in model.named_parameters() if p.requires_grad}


def lora_tensors(models: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Every trainable tensor, fp32 CPU copies, keyed "<component>.<parameter name>"."""
    return {key: p.detach().to("cpu").clone() for key, p in trainable(models).items()}


@torch.no_grad()
def load_lora_tensors(models: dict[str, nn.Module], saved: dict[str, torch.Tensor], where: str) -> None:
    live = trainable(models)
    missing, unexpected = sorted(set(live) - set(saved)), sorted(set(saved) - set(live))
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise SdloraError(f"{where}: the checkpoint's LoRA does not match this config's LoRA "
                          f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {first}); resume with "
                          "the run's own config (lora.* settings must not change)")
    for key, p in live.items():
        if saved[key].shape != p.shape:
            raise SdloraError(f"{where}: {key} has shape {tuple(saved[key].shape)} in the checkpoint, "
                              f"{tuple(p.shape)} here; lora.rank and the presets must not change on resume")
        p.copy_(saved[key])


def training_state(*, step: int, stream: dict, models: dict[str, nn.Module], optimizer, scheduler, scaler,
                   guard, num_processes: int, config: str, ema=None, precision: str | None = None) -> dict:
    return {
        "version": STATE_VERSION,
        "step": step,
        "stream": stream,
        "lora": lora_tensors(models),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "guard": guard.state_dict(),
        "rng": rng.capture(),
        "num_processes": num_processes,
        "config": config,
        "ema": ema.state_dict() if ema is not None else None,
        "precision": precision,  # the mode `auto` resolved to (a resume keeps it: it may be timed)
    }


def restore(state: dict, *, models: dict[str, nn.Module], optimizer, scheduler, scaler, guard,
            where: str, ema=None) -> int:
    """Load a training state into a freshly built run; returns the step to continue from."""
    load_lora_tensors(models, state["lora"], where)
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as exc:
        raise SdloraError(f"{where}: the optimizer state does not fit this config ({exc}); "
                          "train.optimizer and the LoRA settings must not change on resume") from None
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    guard.load_state_dict(state["guard"])
    if ema is not None:
        if not state.get("ema"):
            raise SdloraError(f"{where}: the checkpoint holds no EMA state (it was saved with ema.enabled = false); "
                              "resume with the run's own config")
        ema.load_state_dict(state["ema"], where)
    rng.restore(state["rng"])
    return int(state["step"])
