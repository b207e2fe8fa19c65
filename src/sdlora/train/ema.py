"""Exponential moving average (EMA) of the trainable LoRA tensors, kept in fp32.

Every `every_n_steps` optimizer steps the average ("shadow") moves towards the live weights:

    shadow = d_n * shadow + (1 - d_n) * weights          (n = updates done before this one: 0, 1, 2, ...)
    d_n    = min(decay, (1 + n) / (10 + n))   with warm-up, else decay

The warm-up is the standard one of tf.train.ExponentialMovingAverage(num_updates=n) and of diffusers'
EMAModel.get_decay without `use_ema_warmup` ((1 + step) / (10 + step) capped at `decay`): the first
updates (d_0 = 0.1, d_1 = 2/11, ...) follow the weights closely, so the average is not held back by the
LoRA's initial values (`up` = 0) for ~1/(1 - decay) steps. The shadow starts as a copy of the initial
weights. It lives on the training device or, with `on_cpu`, in CPU memory (the update then copies the
weights over).

Keys are those of the training state's LoRA ("<component>.<parameter name>", train/state.py), so the
shadow is saved into and restored from state.pt bitwise; `applied(models)` puts the shadow into the
live parameters for a `with` block (exporting the EMA file, sampling) and restores the raw weights
exactly afterwards.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import torch
from torch import nn

from sdlora.config import RunConfig
from sdlora.errors import SdloraError
from sdlora.train.state import trainable

EMA_SUFFIX = "-ema"  # <name>-ema.safetensors beside <name>.safetensors (train/export.lora_filenames)


def ema_decay(n: int, decay: float, warmup: bool) -> float:
    """The decay of update number `n` (0-based count of the updates done before it)."""
    return min(decay, (1 + n) / (10 + n)) if warmup else decay


class EMA:
    """The fp32 shadow of a run's trainable tensors and the number of updates made."""

    def __init__(self, models: dict[str, nn.Module], *, decay: float, warmup: bool = True, every_n_steps: int = 1,
                 on_cpu: bool = False):
        self.decay, self.warmup, self.every = decay, warmup, max(1, every_n_steps)
        self.updates = 0
        live = trainable(models)
        self.shadow = {k: p.detach().to("cpu" if on_cpu else p.device, torch.float32, copy=True)
                       for k, p in live.items()}

    @torch.no_grad()
    def update(self, models: dict[str, nn.Module], step: int) -> bool:
        """After optimizer step `step` (1-based): move the shadow when `step` is a multiple of every_n_steps."""
        if step % self.every:
            return False
        weight = 1.0 - ema_decay(self.updates, self.decay, self.warmup)
        for key, p in trainable(models).items():
            shadow = self.shadow[key]
            shadow.lerp_(p.detach().to(shadow.device, torch.float32), weight)  # shadow += w * (p - shadow)
        self.updates += 1
        return True

    def state_dict(self) -> dict:
        """fp32 CPU copies (plain tensors and numbers: loads with weights_only=True)."""
        return {"updates": self.updates, "shadow": {k: t.detach().to("cpu", copy=True) for k, t in self.shadow.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict, where: str) -> None:
        saved = state.get("shadow") if isinstance(state, dict) else None
        if not isinstance(saved, dict) or saved.keys() != self.shadow.keys():
            raise SdloraError(f"{where}: the checkpoint's EMA does not match this run's LoRA; resume with the "
                              "run's own config (ema.* and lora.* settings must not change)")
        for key, t in self.shadow.items():
            if saved[key].shape != t.shape:
                raise SdloraError(f"{where}: EMA tensor {key} has shape {tuple(saved[key].shape)} in the "
                                  f"checkpoint, {tuple(t.shape)} here; resume with the run's own config")
            t.copy_(saved[key])
        self.updates = int(state["updates"])

    @contextlib.contextmanager
    def applied(self, models: dict[str, nn.Module]) -> Iterator[None]:
        """The shadow in the live parameters for the block; the raw weights come back bitwise after it."""
        live = trainable(models)
        with torch.no_grad():
            raw = {k: p.detach().clone() for k, p in live.items()}
            for key, p in live.items():
                p.copy_(self.shadow[key])
        try:
            yield
        finally:
            with torch.no_grad():
                for key, p in live.items():
                    p.copy_(raw[key])


def build_ema(cfg: RunConfig, models: dict[str, nn.Module]) -> EMA | None:
    """The run's EMA when `ema.enabled`, over the freshly initialised (or restored) LoRA."""
    e = cfg.ema
    if not e.enabled:
        return None
    return EMA(models, decay=e.decay, warmup=e.warmup, every_n_steps=e.every_n_steps, on_cpu=e.on_cpu)


def ema_metadata(ema: EMA) -> dict[str, str]:
    """What an EMA file adds to the run's metadata: the schedule and how many updates it holds."""
    return {"sdlora_ema": json.dumps({"decay": ema.decay, "warmup": ema.warmup, "every_n_steps": ema.every,
                                      "updates": ema.updates})}
