"""The run's precision and accelerator (device placement, DDP, autocast, the fp16 GradScaler).

Precision policy: the frozen weights (UNet, VAE, text encoder) are cast to the low precision
(fp16/bf16) to halve their memory; the LoRA parameters, their gradients and the optimizer state stay
in fp32, and autocast runs the matmuls in the low precision. Because every trainable tensor is fp32,
the fp16 GradScaler can always unscale (no "Attempting to unscale FP16 gradients").
"""
from __future__ import annotations

import logging
import os

import torch

from sdlora.config import RunConfig
from sdlora.dtypes import DTYPES
from sdlora.errors import SdloraError
from sdlora.models.model_weights import empty_unet
from sdlora.train import checkpoint as ckpt
from sdlora.train.convs import choose as choose_convs
from sdlora.train.precision import NAMES, Choice, cpu_has_native_bf16
from sdlora.train.precision import choose as choose_precision
from sdlora.train.precision_probe import PROBE_MIN_PARAMS, probe_block

SD_VAE_FACTOR = 8  # pixels per latent of SD 1.x's VAE (the probe runs for SD-sized UNets only)

log = logging.getLogger("sdlora.train")


def resolve_precision(setting: str, device_type: str) -> str:
    """`auto` -> a concrete mode without timing anything; the rule and its reasons live in
    sdlora.train.precision (a run resolves with `run_precision`)."""
    return choose_precision(setting, device_type).mode


def device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_precision(cfg: RunConfig, resumed: str | None = None) -> Choice:
    """The run's precision and why: as configured; for `auto`, the mode a resumed run started in
    (`resumed`, from its checkpoint), else resolved, timing bf16 on the CPU for a large UNet."""
    setting, device = cfg.train.mixed_precision, device_type()
    if setting == "auto" and resumed in NAMES:
        return Choice(resumed, f"auto: {NAMES[resumed]}, as the resumed run started")
    probe = bf16_probe(cfg) if setting == "auto" and device == "cpu" and cpu_has_native_bf16() else None
    return choose_precision(setting, device, probe=probe)


def bf16_probe(cfg: RunConfig):
    """A callable timing bf16 against fp32 on a block of the run's UNet, or None: a small UNet (not
    timed: fp32), a model whose architecture is only known once loaded (a .ckpt pickle), a model that
    cannot be opened (loading it reports why), or several processes (they must agree)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    try:
        unet = empty_unet(cfg.model.name)
    except SdloraError:
        return None
    if unet is None or sum(p.numel() for p in unet.parameters()) < PROBE_MIN_PARAMS:
        return None
    latent = max(1, cfg.data.resolution // SD_VAE_FACTOR)
    native = tuple(choose_convs(cfg.train.conv_backend, "cpu", mode).native for mode in ("no", "bf16"))
    return lambda: probe_block(unet, cfg.train.batch_size, (latent, latent), native_convs=native)


def resumed_precision(cfg: RunConfig, resume: str | None) -> str | None:
    """The precision the checkpoint to resume was trained in (None: not resuming, or not recorded; a bad
    --resume is reported when the run opens it)."""
    if not resume or cfg.train.mixed_precision != "auto":
        return None
    try:
        return ckpt.load_state(ckpt.resolve_resume(resume, cfg.save.output_dir)).get("precision")
    except SdloraError:
        return None


def make_accelerator(cfg: RunConfig, precision: Choice | None = None):
    """The HF Accelerator: device placement, DDP, autocast and the fp16 GradScaler (`precision`: the
    run's, from run_precision; default: resolved without timing)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    device = device_type()
    precision = precision.mode if precision is not None else resolve_precision(cfg.train.mixed_precision, device)
    # module dropout skips whole adapters, so some LoRA weights get no gradient in a step
    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.lora.module_dropout > 0)
    return Accelerator(mixed_precision=precision, cpu=device == "cpu", kwargs_handlers=[ddp])


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
