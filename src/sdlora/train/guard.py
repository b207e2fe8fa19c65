"""Failure handling in the loop: non-finite losses, CUDA out-of-memory, Ctrl-C.

Each turns a silent or cryptic failure into a clear message: NaN/inf steps are skipped and
counted (the LoRA is untouched) until too many come in a row; OOM names the settings to change;
Ctrl-C (SIGINT) only sets a flag, so the loop stops between steps and saves a resumable checkpoint.
"""
from __future__ import annotations

import signal
import threading

import torch

from sdlora.config import RunConfig
from sdlora.errors import SdloraError


class TrainingDiverged(SdloraError):
    """Too many consecutive steps with a NaN/inf loss or gradient."""


class NonFiniteGuard:
    """Counts skipped (non-finite) steps; raises TrainingDiverged after `limit` in a row."""

    def __init__(self, limit: int, precision: str):
        self.limit, self.precision = limit, precision
        self.consecutive = 0
        self.total = 0

    def update(self, skipped: bool, step: int) -> None:
        if not skipped:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        if self.limit > 0 and self.consecutive >= self.limit:
            raise TrainingDiverged(f"stopped at step {step}: {self.consecutive} consecutive steps had a NaN/inf "
                                   f"loss or gradient ({self.hint()}); the last good checkpoint was kept")

    def hint(self) -> str:
        if self.precision == "fp16":
            return "fp16 overflow: try train.mixed_precision = \"bf16\" or a lower train.lr"
        return "try a lower train.lr, train.max_grad_norm = 1.0, or a smaller train.noise_offset"

    def state_dict(self) -> dict:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict) -> None:
        self.consecutive, self.total = int(state["consecutive"]), int(state["total"])


def oom_message(cfg: RunConfig, precision: str) -> str:
    """What to change when CUDA runs out of memory, listing only the settings not already at their cheapest."""
    t, d = cfg.train, cfg.data
    tips = []
    if t.batch_size > 1:
        tips.append(f"a smaller train.batch_size (now {t.batch_size}; use train.grad_accum to keep the effective batch)")
    if not t.gradient_checkpointing:
        tips.append("train.gradient_checkpointing = true")
    if d.cache_latents == "off":
        tips.append("data.cache_latents = \"memory\" (frees the VAE)")
    if precision == "no":
        tips.append("train.mixed_precision = \"bf16\" or \"fp16\"")
    if d.resolution > 256:
        tips.append(f"a lower data.resolution (now {d.resolution})")
    if cfg.lora.train_text_encoder:
        tips.append("lora.train_text_encoder = false (lets the text outputs be cached)")
    return "CUDA out of memory; try " + ("; ".join(tips) if tips else "a GPU with more memory")


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError)


class StopRequest:
    """Installs a SIGINT handler that records the request; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
