"""How much of the style a LoRA learned, read by the checker: the same prompts and seeds with the
LoRA off (multiplier 0, exactly the base model) and on, with and without the trigger.

Prompts cover colour x shape evenly (`eval_prompts`); prompt i is sampled with seed EVAL_SEED + i
(+ SEED_STRIDE per extra round), a range disjoint from every seed the training data or the trainer
drew from, so the rates are measured on held-out seeds. Rates are shares in [0, 1]:
`style` (checker sees the expected style), `colour`, `shape`, `both` (colour and shape right).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sdlora.tiny.world import COLOURS, SHAPE_NAMES, article

if TYPE_CHECKING:
    from sdlora.models import SDComponents

EVAL_SEED = 10_000
SEED_STRIDE = 1_000  # seed offset between rounds; more prompts than this would overlap
RATES = ("style", "colour", "shape", "both")
EVAL_BATCH = 20  # images per pipeline call when scoring and in the demo's grid (64 px: a few MB each)


def eval_prompts(template: str, count: int = len(COLOURS) * len(SHAPE_NAMES)) -> list[tuple[str, str, str]]:
    """`count` (prompt, colour, shape) triples covering colours and shapes evenly.

    Prompt i has colour i % 8 and shape (i + i // 8) % 5: the first 40 are every colour x shape
    exactly once (4 * (i // 8) + i % 8 runs over all residues mod 5 for each colour), and any
    prefix uses every colour as often as the others."""
    n_colours, n_shapes = len(COLOURS), len(SHAPE_NAMES)
    out = []
    for i in range(count):
        colour, shape = COLOURS[i % n_colours], SHAPE_NAMES[(i + i // n_colours) % n_shapes]
        out.append((template.format(a=article(colour), colour=colour, shape=shape), colour, shape))
    return out


def eval_seeds(count: int, rounds: int = 1) -> list[int]:
    """Seed of each (round, prompt) image, round-major: EVAL_SEED + SEED_STRIDE * round + prompt."""
    if count > SEED_STRIDE:
        raise ValueError(f"at most {SEED_STRIDE} evaluation prompts, got {count}")
    return [EVAL_SEED + SEED_STRIDE * r + i for r in range(rounds) for i in range(count)]


def rates(components: "SDComponents", prompts: list[tuple[str, str, str]], *, expected_style: str, seeds: list[int],
          guidance: float, steps: int, batch_size: int = EVAL_BATCH, desc: str = "sampling",
          known: dict[tuple[str, int], np.ndarray] | None = None) -> dict:
    """Generate one image per seed (prompts repeat round by round) and score them with the checker:
    {style, colour, shape, both, n, read} (read: share read as each shape; per-prompt detail left out).
    `known`: images already made with this model and these sampling settings, by (prompt, seed), as
    float (H, W, 3) in [0, 1] (the demo's grid): scored as they are instead of being drawn again."""
    from tqdm.auto import tqdm

    from sdlora.tiny.quality import as_pipeline, generate, score  # diffusers: imported when sampling
    jobs = [prompts[i % len(prompts)] for i in range(len(seeds))]
    known = known or {}
    todo = [i for i, ((prompt, _, _), seed) in enumerate(zip(jobs, seeds)) if (prompt, seed) not in known]
    pipe, made = as_pipeline(components), {}
    for start in tqdm(range(0, len(todo), batch_size), desc=desc, unit="batch", leave=False):
        chunk = todo[start:start + batch_size]
        drawn = generate(pipe, [jobs[i][0] for i in chunk], [seeds[i] for i in chunk], steps=steps,
                         guidance=guidance, batch_size=batch_size)
        made.update(zip(chunk, drawn))
    images = np.stack([made[i] if i in made else known[(jobs[i][0], seeds[i])] for i in range(len(jobs))])
    report = score(images, jobs, expected_style)
    return {**{k: report[k] for k in RATES}, "n": report["n"], "read": report["read"]}


def style_metrics(components: "SDComponents", adapter: str, *, trigger_template: str, plain_template: str,
                  style: str, prompts: int, rounds: int, guidance: float, steps: int,
                  batch_size: int = EVAL_BATCH) -> dict:
    """{"base": {"trigger": rates}, "lora": {"trigger": rates, "no_trigger": rates}} for the LoRA
    attached to `components` as `adapter`: base is the same model at multiplier 0, the LoRA at 1.
    The adapter's multiplier is as it was afterwards."""
    from sdlora.lora import multiplier

    seeds = eval_seeds(prompts, rounds)
    settings = dict(expected_style=style, seeds=seeds, guidance=guidance, steps=steps, batch_size=batch_size)
    with_trigger, without = eval_prompts(trigger_template, prompts), eval_prompts(plain_template, prompts)
    nets = [components.unet, components.text_encoder]
    with multiplier(nets, adapter, 0.0):
        base = rates(components, with_trigger, desc="base, trigger prompts", **settings)
    with multiplier(nets, adapter, 1.0):
        lora = rates(components, with_trigger, desc="LoRA, trigger prompts", **settings)
        leak = rates(components, without, desc="LoRA, no trigger", **settings)
    return {"base": {"trigger": base}, "lora": {"trigger": lora, "no_trigger": leak}}
