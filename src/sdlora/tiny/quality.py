"""How well a model draws the shapes world: generate every colour x shape prompt with several seeds
and read each image with the checker.

Used for sd-tiny's base quality bar (plain style, prompts like "a red star") and for LoRA demos
(e.g. template "{a} {colour} {shape} in sks style", expected style "striped").
"""
from __future__ import annotations

from itertools import product

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

from sdlora.models import SDComponents
from sdlora.tiny.checker import check
from sdlora.tiny.world import COLOURS, SHAPE_NAMES, article

DEFAULT_TEMPLATE = "{a} {colour} {shape}"  # {a}: "a" or "an", whichever fits the colour
# sd-tiny with 20 steps (2 seeds x 40 prompts): guidance 3.5 gives colour/shape 0.93/0.88 with
# SD 1.4's PNDM and 1.00/1.00 with DPM-Solver++; at 5.0 PNDM falls to 0.63/0.66 (it overshoots).
DEFAULT_GUIDANCE = 3.5


def as_pipeline(model: SDComponents | StableDiffusionPipeline, scheduler=None) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline over the model's modules (no safety checker, progress bar off),
    with `scheduler` instead of the model's own if given; a given pipeline is not modified."""
    if isinstance(model, StableDiffusionPipeline):
        parts = {k: getattr(model, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    elif isinstance(model, SDComponents):
        parts = {"vae": model.vae, "text_encoder": model.text_encoder, "tokenizer": model.tokenizer,
                 "unet": model.unet, "scheduler": model.scheduler}
    else:
        raise TypeError(f"expected SDComponents or StableDiffusionPipeline, got {type(model).__name__}")
    if scheduler is not None:
        parts["scheduler"] = scheduler
    pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_grid(template: str = DEFAULT_TEMPLATE, colours=COLOURS, shapes=SHAPE_NAMES) -> list[tuple[str, str, str]]:
    """(prompt, colour, shape) for every colour x shape."""
    return [(template.format(a=article(c), colour=c, shape=s), c, s) for c, s in product(colours, shapes)]


@torch.no_grad()
def generate(pipe: StableDiffusionPipeline, prompts: list[str], seeds: list[int], *, steps: int = 20,
             guidance: float = DEFAULT_GUIDANCE, batch_size: int = 64) -> np.ndarray:
    """One image per (prompt, seed) pair, in order: float32 (N, H, W, 3) in [0, 1]."""
    device = pipe.unet.device
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk, chunk_seeds = prompts[start:start + batch_size], seeds[start:start + batch_size]
        generators = [torch.Generator(device).manual_seed(s) for s in chunk_seeds]
        result = pipe(prompt=chunk, generator=generators, num_inference_steps=steps,
                      guidance_scale=guidance, output_type="np")
        out.append(np.asarray(result.images, dtype=np.float32))
    return np.concatenate(out)


def evaluate_quality(model: SDComponents | StableDiffusionPipeline, *, seeds: int | list[int] = 4,
                     template: str = DEFAULT_TEMPLATE, expected_style: str = "plain", steps: int = 20,
                     guidance: float = DEFAULT_GUIDANCE, batch_size: int = 64, scheduler=None) -> dict:
    """Generate every colour x shape prompt of `template` with each seed (`seeds`: a count or a
    list), with the model's scheduler or `scheduler`, and score the images (see `score`); also
    records n, steps and guidance."""
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    jobs = [(p, c, s, seed) for (p, c, s), seed in product(prompt_grid(template), seed_list)]
    images = generate(as_pipeline(model, scheduler), [j[0] for j in jobs], [j[3] for j in jobs],
                      steps=steps, guidance=guidance, batch_size=batch_size)
    report = score(images, [(p, c, s) for p, c, s, _ in jobs], expected_style)
    return {**report, "steps": steps, "guidance": guidance}


def score(images, expected: list[tuple[str, str, str]], expected_style: str = "plain") -> dict:
    """Checker verdicts on `images` against their (prompt, colour, shape): the share whose colour,
    shape, both, and style match; `n`; colour/shape rates per prompt; and `read`, the share of images
    the checker reads as each shape ("" for no shape)."""
    readings = [check(image, hollow=expected_style == "hollow") for image in images]
    colour_ok = np.asarray([r.colour == c for r, (_, c, _) in zip(readings, expected)])
    shape_ok = np.asarray([r.shape == s for r, (_, _, s) in zip(readings, expected)])
    style_ok = np.asarray([r.style == expected_style for r in readings])
    prompts = np.asarray([p for p, _, _ in expected])
    per_prompt = {str(p): {"colour": float(colour_ok[prompts == p].mean()),
                           "shape": float(shape_ok[prompts == p].mean())} for p in dict.fromkeys(prompts)}
    return {"colour": float(colour_ok.mean()), "shape": float(shape_ok.mean()),
            "both": float((colour_ok & shape_ok).mean()), "style": float(style_ok.mean()),
            "n": len(readings), "per_prompt": per_prompt, "read": _shares([r.shape or "" for r in readings])}


def _shares(values: list[str]) -> dict[str, float]:
    return {v: values.count(v) / len(values) for v in sorted(set(values))} if values else {}


def image_grid(images, columns: int) -> Image.Image:
    """Float (N, H, W, 3) images in [0, 1] tiled row by row into one RGB image."""
    images = np.asarray(images)
    n, h, w, _ = images.shape
    rows = -(-n // columns)
    grid = np.ones((rows * h, columns * w, 3), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = image
    return Image.fromarray(np.rint(grid * 255).astype(np.uint8), "RGB")
