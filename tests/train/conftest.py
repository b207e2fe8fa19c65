"""Shared fixtures for the trainer tests: a tiny SD model saved as a diffusers folder (so the real
loader is exercised), a few small captioned PNGs, and a config factory for fast runs."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sdlora.train.entry import resolve_config

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def save_tiny_model(folder, seed: int = 0):
    from sdlora.models import tiny_components

    c = tiny_components(seed)
    c.unet.save_pretrained(folder / "unet")
    c.vae.save_pretrained(folder / "vae")
    c.text_encoder.save_pretrained(folder / "text_encoder")
    c.scheduler.save_pretrained(folder / "scheduler")
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A diffusers folder holding the tiny random SD-architecture model (no tokenizer: the bundled one)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def write_images(folder, n: int = 6, size: int = 32, seed: int = 0):
    """n PNGs: a coloured square on a white ground, captioned with its colour."""
    folder.mkdir(parents=True, exist_ok=True)
    rs = np.random.default_rng(seed)
    names = list(COLORS)
    for i in range(n):
        color = names[i % len(names)]
        a = np.full((size, size, 3), 255, np.uint8)
        lo, hi = size // 4, 3 * size // 4
        a[lo:hi, lo:hi] = COLORS[color]
        a = np.clip(a.astype(int) + rs.integers(-8, 8, a.shape), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"a {color} square")
    return folder


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("tiny-data"))


# Settings for fast CPU runs on the tiny model: 32 px images (16x16 latents), small rank.
FAST = {
    "data.resolution": 32, "data.bucket_step": 32, "data.min_bucket_side": 32, "data.num_workers": 0,
    "lora.rank": 4, "lora.unet_preset": "unet-attn", "train.batch_size": 2, "train.steps": 4,
    "train.mixed_precision": "no",  # `auto` picks bf16 on CPUs with native bf16: same results everywhere
    "save.every_n_epochs": 0, "log.tensorboard": False, "log.every_n_steps": 1,
    "validation.num_inference_steps": 2,
}


@pytest.fixture(scope="session")
def fast_flags():
    """FAST for module-scoped runs (which cannot use the function-scoped make_cfg)."""
    return dict(FAST)


@pytest.fixture
def make_cfg(tiny_model, tiny_data, tmp_path):
    """make_cfg(**{"train.steps": 6}, sets=[...]) -> RunConfig for a fast tiny run in tmp_path/run."""

    def make(sets=(), data=None, **flags):
        merged = {**FAST, "model.name": str(tiny_model), "save.output_dir": str(tmp_path / "run"), **flags}
        return resolve_config(None, list(sets), merged, [str(d) for d in (data or [tiny_data])])

    return make
