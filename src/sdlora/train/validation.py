"""Validation during training: sample grids for fixed prompts/seeds, and a comparable validation loss.

Samples use sdlora.generate's Sampler (one seeded CPU generator per image), so every grid of a run
uses the same starting noise and `sdlora generate` with the same prompt and seed reproduces a cell.
The validation loss uses fixed noise and timesteps per held-out batch (derived from the validation
seed and the batch index), so values at different steps measure the LoRA, not the dice.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
from pathlib import Path

import numpy as np
import torch

from sdlora.config import RunConfig
from sdlora.imaging import contact_sheet, to_image, to_uint8
from sdlora.train import rng
from sdlora.train.checkpoint import atomic_write_bytes
from sdlora.train.precision import sampling_autocast
from sdlora.train.step import StepContext, compute_loss

SAMPLES = "samples"


@contextlib.contextmanager
def sampling_mode(modules: list[torch.nn.Module], device: torch.device):
    """Eval mode (no LoRA dropout) on `device` for the duration; restores mode and device after."""
    saved = [(m, m.training, next(m.parameters()).device) for m in modules]
    try:
        for m in modules:
            m.eval().to(device)
        yield
    finally:
        for m, training, where in saved:
            m.train(training).to(where)


def lora_multiplier(components, value: float | None, adapter: str = "default"):
    """Run the LoRA at `value` for a `with` block (0: exactly the base model; None: leave it alone);
    every layer gets its previous multiplier back afterwards."""
    from sdlora.lora import multiplier

    if value is None:
        return contextlib.nullcontext()
    return multiplier([components.unet, components.text_encoder], adapter, value)


class Validator:
    """Makes the sample grid of a step and remembers the base model's images for the no-effect check."""

    def __init__(self, cfg: RunConfig, components, device: torch.device, run_dir: str | Path):
        self.cfg, self.components, self.device = cfg, components, device
        self.folder = Path(run_dir) / SAMPLES
        self.base_images: list[np.ndarray] | None = None
        self._sampler = None

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.validation.prompts)

    def _specs(self):
        from sdlora.generate.prompts import PromptSpec
        from sdlora.generate.schedulers import DEFAULT_SCHEDULER

        v, res = self.cfg.validation, self.cfg.data.resolution
        scheduler = "ddim" if self.cfg.train.zero_terminal_snr else DEFAULT_SCHEDULER  # PLMS cannot sample zero SNR
        return [PromptSpec(prompt=p, negative_prompt=v.negative_prompt, seed=v.seed, steps=v.num_inference_steps,
                           cfg=v.guidance_scale, width=v.width or res, height=v.height or res, scheduler=scheduler)
                for p in v.prompts]

    def images(self) -> list[np.ndarray]:
        """One image per prompt, (H, W, 3) float32 in [0, 1]."""
        from sdlora.generate import Sampler
        from sdlora.generate.prediction import NoiseSettings
        from sdlora.models import build_pipeline

        c, t = self.components, self.cfg.train
        if self._sampler is None:  # sampled as the LoRA is trained: the run's target and noise schedule
            noise = NoiseSettings(t.prediction_type, t.zero_terminal_snr)
            self._sampler = Sampler(c, pipeline=build_pipeline(c), noise=noise)
        with sampling_mode([c.unet, c.vae, c.text_encoder], self.device), sampling_autocast(c, self.device):
            return [self._sampler.arrays(spec, [spec.seed])[0] for spec in self._specs()]

    def grid(self, step: int, *, base: bool = False, ema: bool = False):
        """Sample every prompt, save samples/step-N[-base|-ema].png, return (PIL grid, images)."""
        arrays = self.images()
        if base:
            self.base_images = arrays
        sheet = contact_sheet([to_image(a) for a in arrays], list(self.cfg.validation.prompts))
        buffer = io.BytesIO()
        sheet.save(buffer, format="PNG")
        name = f"step-{step:06d}{'-base' if base else '-ema' if ema else ''}.png"
        atomic_write_bytes(self.folder / name, buffer.getvalue())
        return sheet, arrays

    def identical_to_base(self, arrays: list[np.ndarray]) -> bool:
        """True when every image equals the base model's pixel for pixel (8-bit)."""
        if self.base_images is None:
            return False
        return all(np.array_equal(to_uint8(a), to_uint8(b)) for a, b in zip(arrays, self.base_images))


@torch.no_grad()
def validation_loss(ctx: StepContext, batches: list[dict], seed: int, autocast) -> float:
    """Mean loss over the held-out batches with noise/timesteps fixed by (seed, batch index)."""
    unet = ctx.unet
    unet.eval()
    try:
        losses = []
        for j, batch in enumerate(batches):
            g = rng.generator(seed, "validation", j, device=ctx.device)
            with autocast():
                losses.append(compute_loss(dataclasses.replace(ctx, train_text_encoder=False), batch, g).item())
    finally:
        unet.train()
    return float(np.mean(losses)) if losses else float("nan")
