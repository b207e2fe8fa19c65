"""Pre-rendered pools of shapes-world images and their tokenized captions, for pretraining.

Rendering is ~0.15 ms an image, so a pool of tens of thousands is rendered once, in parallel
worker processes, and training batches index into it. Image i of a pool is `scene_for_seed(seed,
start + i, style)`: a pool depends only on (seed, start, count, style), not on the worker count.
"""
from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass

import numpy as np
import torch

from sdlora.tiny.render import render
from sdlora.tiny.world import Scene, scene_for_seed

# Caption variants of every image; training picks one per sample, so that the partial prompts
# used at generation time ("a red star") are as familiar as full captions.
CAPTION_VARIANTS: tuple[dict[str, bool], ...] = (
    {"size": True, "background": True},
    {"size": False, "background": True},
    {"size": True, "background": False},
    {"size": False, "background": False},
)


@dataclass
class Pool:
    """`images`: uint8 (N, 64, 64, 3); `scenes`: the N scenes they show."""

    images: np.ndarray
    scenes: list[Scene]


def _render_range(job: tuple[int, int, int, str]) -> tuple[np.ndarray, list[Scene]]:
    seed, start, stop, style = job
    scenes = [scene_for_seed(seed, i, style) for i in range(start, stop)]
    images = np.stack([render(s) for s in scenes]) if scenes else np.zeros((0, 64, 64, 3), np.uint8)
    return images, scenes


def render_pool(seed: int, count: int, style: str = "plain", start: int = 0,
                workers: int | None = None) -> Pool:
    """Images start..start+count-1 of stream `seed`, rendered by `workers` processes.

    Call before any CUDA work: workers are forked (cheap, no re-import), which CUDA forbids later."""
    workers = max(1, min(workers or os.cpu_count() or 1, count // 500 or 1))
    bounds = np.linspace(start, start + count, 4 * workers + 1).astype(int) if workers > 1 \
        else np.asarray([start, start + count])
    jobs = [(seed, int(a), int(b), style) for a, b in zip(bounds[:-1], bounds[1:])]
    if workers == 1:
        parts = [_render_range(job) for job in jobs]
    else:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_render_range, jobs)
    images = np.concatenate([p[0] for p in parts])
    scenes = [s for p in parts for s in p[1]]
    return Pool(images, scenes)


def caption_table(scenes: list[Scene], tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids of every distinct caption, and which caption each variant of each scene uses.

    Returns (ids: int64 (U, 77), index: int64 (N, len(CAPTION_VARIANTS))); row 0 of `ids` is the
    empty caption used for classifier-free guidance dropout. Captions are padded to 77 tokens
    exactly as StableDiffusionPipeline pads prompts."""
    captions: dict[str, int] = {"": 0}
    index = torch.empty(len(scenes), len(CAPTION_VARIANTS), dtype=torch.long)
    for n, scene in enumerate(scenes):
        for v, variant in enumerate(CAPTION_VARIANTS):
            index[n, v] = captions.setdefault(scene.caption(**variant), len(captions))
    ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    return ids.long(), index
