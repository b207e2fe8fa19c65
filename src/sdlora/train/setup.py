"""The run's precision and accelerator (device placement, DDP, autocast, the fp16 GradScaler).

Precision policy: the frozen weights (UNet, VAE, text encoder) are cast to the low precision
(fp16/bf16) to halve their memory; the LoRA parameters, their gradients and the optimizer state stay
in fp32, and autocast runs the matmuls in the low precision. Because every trainable tensor is fp32,
the fp16 GradScaler can always unscale (no "Attempting to unscale FP16 gradients").
"""
from __future__ import annotations

import logging

import torch

from sdlora.config import RunConfig
from sdlora.dtypes import DTYPES
from sdlora.train.precision import choose as choose_precision

log = logging.getLogger("sdlora.train")


def resolve_precision(setting: str, device_type: str) -> str:
    """`auto` -> a concrete mode; the rule and its reasons live in sdlora.train.precision."""
    return choose_precision(setting, device_type).mode


def make_accelerator(cfg: RunConfig):
    """The HF Accelerator: device placement, DDP, autocast and the fp16 GradScaler."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(cfg.train.mixed_precision, device_type)
    # module dropout skips whole adapters, so some LoRA weights get no gradient in a step
    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.lora.module_dropout > 0)
    return Accelerator(mixed_precision=precision, cpu=device_type == "cpu", kwargs_handlers=[ddp])


def release_accelerator(acc) -> None:
    """End the run's accelerator so that another train() in this process may use other settings.

    end_training() tears down the process group (gloo aborts at exit otherwise). accelerate keeps
    mixed_precision in a process-wide singleton that refuses changes; clearing it is the only way
    to train twice in one process (a notebook, the test suite) with different precisions.
    """
    from accelerate.state import AcceleratorState, GradientState

    # Prepared models first: a DDP reducer freed after the group is gone joins gloo's worker thread while
    # holding the GIL that thread waits for (a hang at exit, seen with two CPU processes).
    acc.free_memory()
    acc.end_training()
    AcceleratorState._reset_state()
    GradientState._reset_state()
