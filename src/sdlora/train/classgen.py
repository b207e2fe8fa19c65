"""DreamBooth prior preservation: generate class images with the base model when too few exist.

For every source with role = "class" and num_images = N, the folder is topped up to N images of the
source's prompt, sampled from the untrained base model (before any LoRA is attached) with seeds
derived from the run seed and the image index, and written atomically as class-00012.png. Images
already there (any origin) count, so an interrupted generation continues where it stopped.

With `class_prompts` the images cycle through those prompts (image k of the folder: prompt k mod P,
counting the images already there) and each is written with a caption file holding its prompt, so
the class is preserved in the variants the instance captions use (e.g. its colours).
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

from sdlora.config import RunConfig, SourceConfig
from sdlora.errors import SdloraError
from sdlora.generate import PromptSpec, Sampler
from sdlora.models import build_pipeline
from sdlora.train import rng
from sdlora.train.checkpoint import atomic_write_bytes
from sdlora.train.precision import sampling_autocast
from sdlora.train.validation import sampling_mode, to_image

log = logging.getLogger("sdlora.train")


def existing_images(folder: str | Path) -> list[Path]:
    from sdlora.data.sources import list_images

    root = Path(folder).expanduser()
    return list_images(root) if root.is_dir() else []


def missing_class_images(cfg: RunConfig) -> dict[int, int]:
    """{source index: images to generate} for class sources holding fewer than num_images."""
    missing = {}
    for i, source in enumerate(cfg.data.sources):
        if source.role == "class" and source.num_images > 0:
            have = len(existing_images(source.path))
            if have < source.num_images:
                if not (source.prompt or source.class_prompts):
                    raise SdloraError(f"data.sources[{i}].prompt (or class_prompts) is needed to generate class images "
                                      f"(e.g. \"a photo of a dog\"); {source.path} holds {have} of "
                                      f"num_images = {source.num_images}")
                missing[i] = source.num_images - have
    return missing


def _free_name(folder: Path, start: int) -> tuple[Path, int]:
    k = start
    while (folder / f"class-{k:05d}.png").exists():
        k += 1
    return folder / f"class-{k:05d}.png", k


def generate_class_images(cfg: RunConfig, components, device, *, batch_size: int = 4) -> int:
    """Top up every class folder (see module doc); returns the number of images written."""
    missing = missing_class_images(cfg)
    if not missing:
        return 0
    sampler = Sampler(components, pipeline=build_pipeline(components))
    written = 0
    modules = [components.unet, components.vae, components.text_encoder]
    with sampling_mode(modules, device), sampling_autocast(components, device):
        for index, count in missing.items():
            written += _fill(cfg, cfg.data.sources[index], index, count, sampler, batch_size)
    return written


def prompt_plan(source: SourceConfig, have: int, count: int) -> dict[str, list[int]]:
    """{prompt: indices j < count of the images to generate with it}: `prompt`, or image have + j of the
    folder takes class_prompts[(have + j) % P]."""
    prompts = source.class_prompts or [source.prompt]
    plan: dict[str, list[int]] = {}
    for j in range(count):
        plan.setdefault(prompts[(have + j) % len(prompts)], []).append(j)
    return plan


def _fill(cfg: RunConfig, source: SourceConfig, index: int, count: int, sampler: Sampler, batch_size: int) -> int:
    folder = Path(source.path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    v, res = cfg.validation, cfg.data.resolution
    plan = prompt_plan(source, len(existing_images(folder)), count)
    log.info("generating %d class images for %s (%s)", count, folder, ", ".join(f'"{p}"' for p in plan))
    k = 0
    for prompt, js in plan.items():
        for start in range(0, len(js), batch_size):
            chunk = js[start:start + batch_size]
            seeds = [rng.derive_seed(cfg.train.seed, "class", index, j) % (1 << 31) for j in chunk]
            spec = PromptSpec(prompt=prompt, negative_prompt=v.negative_prompt, seed=seeds[0],
                              steps=v.num_inference_steps, cfg=v.guidance_scale, width=res, height=res)
            for array in sampler.arrays(spec, seeds):
                path, k = _free_name(folder, k)
                buffer = io.BytesIO()
                to_image(array).save(buffer, format="PNG")
                if source.class_prompts:  # the caption first: an image never lands without it
                    atomic_write_bytes(path.with_suffix(source.caption_extension), (prompt + "\n").encode("utf-8"))
                atomic_write_bytes(path, buffer.getvalue())
    return count
