"""Sampling images from a loaded model: one diffusers pipeline, reused for every prompt, with the
scheduler swapped per prompt from the scheduler table and one seeded generator per image.

Seeds: image i of a prompt uses seed + i and its own CPU `torch.Generator`, so an image depends on
its seed only (not on the batch it was in, nor on the device) and can be regenerated on its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from sdlora.dtypes import SHORT_DTYPES as DTYPES
from sdlora.errors import SdloraError
from sdlora.generate.prediction import NoiseSettings
from sdlora.generate.prompts import PromptSpec, check_spec
from sdlora.generate.schedulers import make_scheduler
from sdlora.imaging import to_image
from sdlora.models import SDComponents


def resolve_device(name: str | None = None) -> torch.device:
    """`None`/"auto": CUDA when available, else CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SdloraError(f"--device {name!r} is not a device (use cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SdloraError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """fp16/bf16/fp32, or "auto": fp16 on CUDA (SD 1.4 was released in fp16), fp32 elsewhere."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise SdloraError(f"--dtype {name!r}: choose one of auto, {', '.join(DTYPES)}")
    return DTYPES[name]


@dataclass
class Sample:
    """One generated image and the exact settings that produced it."""

    image: Image.Image
    spec: PromptSpec
    seed: int


class Sampler:
    """Generates images for PromptSpecs with one pipeline built once over `components`."""

    def __init__(self, components: SDComponents, pipeline=None, noise: NoiseSettings | None = None):
        from sdlora.models import build_pipeline  # the models loader owns pipeline construction

        self.components = components
        self.noise = noise or NoiseSettings()  # what the model was trained for (v-prediction, zero terminal SNR)
        self.pipeline = pipeline if pipeline is not None else build_pipeline(components)
        self.pipeline.set_progress_bar_config(disable=True)
        self._scheduler_config = dict(components.scheduler.config)
        self._schedulers: dict[str, object] = {}

    def _use_scheduler(self, name: str) -> None:
        if name not in self._schedulers:
            self._schedulers[name] = make_scheduler(name, self._scheduler_config, self.noise)
        self.pipeline.scheduler = self._schedulers[name]

    def arrays(self, spec: PromptSpec, seeds: list[int]) -> np.ndarray:
        """Images for `spec`, one per seed, in one batch: float32 (N, H, W, 3) in [0, 1]."""
        return self.batch_arrays([(spec, seed) for seed in seeds])

    @torch.no_grad()
    def batch_arrays(self, jobs: list[tuple[PromptSpec, int]]) -> np.ndarray:
        """One image per (spec, seed), all in one batch: the specs may differ in their prompts, not in
        how they are sampled (sampling_key). float32 (N, H, W, 3) in [0, 1]."""
        spec = jobs[0][0]
        if any(sampling_key(other) != sampling_key(spec) for other, _ in jobs):
            raise ValueError("one batch samples every image with the same steps, CFG, size and scheduler")
        check_spec(spec)
        self._use_scheduler(spec.scheduler)
        generators = [torch.Generator("cpu").manual_seed(seed) for _, seed in jobs]
        out = self.pipeline(prompt=[s.prompt for s, _ in jobs], negative_prompt=[s.negative_prompt for s, _ in jobs],
                            num_inference_steps=spec.steps, guidance_scale=spec.cfg,
                            width=spec.width, height=spec.height, generator=generators, output_type="np")
        return np.asarray(out.images, dtype=np.float32)

    def samples(self, spec: PromptSpec, count: int = 1, batch_size: int = 1) -> list[Sample]:
        """`count` images of `spec` (seeds spec.seed .. spec.seed + count - 1), `batch_size` at a time."""
        if count < 1:
            raise SdloraError(f"number of images ({count}) must be at least 1")
        return self.many([(spec, spec.seed + i) for i in range(count)], batch_size)

    def many(self, jobs: list[tuple[PromptSpec, int]], batch_size: int = 1, done=None) -> list[Sample]:
        """One image per (spec, seed), in order; consecutive jobs sampled alike share a batch of up to
        `batch_size` (prompts of a grid go together: on a CPU one call for 20 small images costs about
        a third of 20 calls). `done(samples)` is called after each batch."""
        if batch_size < 1:
            raise SdloraError(f"batch size ({batch_size}) must be at least 1")
        result: list[Sample] = []
        for chunk in batches(jobs, batch_size):
            arrays = self.batch_arrays(chunk)
            samples = [Sample(to_image(array), spec, seed) for (spec, seed), array in zip(chunk, arrays)]
            result += samples
            if done is not None:
                done(samples)
        return result


def sampling_key(spec: PromptSpec) -> tuple:
    """What must be equal for two specs to be sampled in one batch (everything but the prompts and seed)."""
    return spec.steps, spec.cfg, spec.width, spec.height, spec.scheduler


def batches(jobs: list[tuple[PromptSpec, int]], size: int) -> list[list[tuple[PromptSpec, int]]]:
    """`jobs` cut into runs of consecutive jobs with one sampling_key, each at most `size` long."""
    out: list[list[tuple[PromptSpec, int]]] = []
    for job in jobs:
        if out and len(out[-1]) < size and sampling_key(out[-1][0][0]) == sampling_key(job[0]):
            out[-1].append(job)
        else:
            out.append([job])
    return out
