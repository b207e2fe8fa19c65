"""The four recipes in examples/: each config validates, keeps its settings within the ranges its README
promises, has parseable judging prompts, and trains 2 steps end to end through `sdlora train` on the
bundled sd-tiny model with a generated stand-in dataset of its kind (tag captions; a DreamBooth
instance folder plus class images, topped up by generation; mixed aspect ratios).

sd-tiny is a 64 px model, so resolution and bucket sizes are overridden (--set), and sampling uses 2
steps; every other recipe setting is kept, which the run's resolved config.toml proves.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlora.cli import main
from sdlora.config import load_config
from sdlora.formats import canonical as C
from sdlora.formats import load_lora_file
from sdlora.generate.prompts import read_prompt_file
from sdlora.lora.presets import resolve_targets

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RECIPES = ["anime-style", "personal-portrait", "art-style", "fantasy-creatures"]

# The example prompts the issue asks each recipe to be judged with.
REQUIRED_PROMPTS = {
    "anime-style": ["a young anime girl with blue hair and green eyes, wearing a school uniform",
                    "an anime-style futuristic cityscape with flying cars and neon signs"],
    "personal-portrait": ["sks person as a medieval knight in shining armor",
                          "sks person in the style of a van gogh painting"],
    "art-style": ["a bustling cafe scene in the style of impressionist paintings",
                  "a cubist interpretation of a modern smartphone"],
    "fantasy-creatures": ["a majestic dragon with iridescent scales and feathered wings",
                          "a cute and furry forest spirit with glowing eyes and antlers"],
}

# sd-tiny: 64 px images (16x16 latents); buckets in steps of 16 so mixed aspect ratios get own buckets.
TINY = ["model.name=tiny", "train.steps=2", "data.resolution=64", "data.bucket_step=16",
        "data.min_bucket_side=32", "data.max_bucket_side=128", "validation.num_inference_steps=2",
        "data.num_workers=0", "train.mixed_precision=no", "log.tensorboard=false"]


def config_path(recipe: str) -> Path:
    return EXAMPLES / recipe / "config.toml"


# ----------------------------------------------------------------------------- static checks

@pytest.mark.parametrize("recipe", RECIPES)
def test_config_validates_and_suits_sd14_on_8gb(recipe):
    cfg = load_config(config_path(recipe))
    assert cfg.model.name == "CompVis/stable-diffusion-v1-4"
    assert 4 <= cfg.lora.rank <= 32 and cfg.lora.alpha is not None and 0 < cfg.lora.alpha <= cfg.lora.rank
    assert 1e-5 <= cfg.train.lr <= 5e-4
    if cfg.lora.train_text_encoder:
        assert cfg.train.text_encoder_lr < cfg.train.lr
    assert cfg.data.resolution == 512 and cfg.data.buckets
    assert cfg.train.batch_size * cfg.train.grad_accum >= 2 and cfg.train.batch_size <= 2  # 8 GB budget
    assert cfg.train.mixed_precision == "auto" and cfg.data.cache_latents != "off"
    assert cfg.save.name == recipe and cfg.save.output_dir == f"runs/{recipe}"
    assert len(cfg.validation.prompts) >= 3 and 0 < cfg.validation.every_n_steps < cfg.train.steps
    assert cfg.data.sources and all(s.path.startswith("data/") for s in cfg.data.sources)


@pytest.mark.parametrize("recipe", RECIPES)
def test_prompts_file_parses_and_holds_the_judging_prompts(recipe):
    specs = read_prompt_file(EXAMPLES / recipe / "prompts.txt")
    texts = [s.prompt.lower() for s in specs]
    for wanted in REQUIRED_PROMPTS[recipe]:
        assert any(wanted in t for t in texts), wanted
    trigger = trigger_of(recipe)
    with_trigger = [t for t in texts if trigger in t]
    assert len(with_trigger) >= 4 and len(texts) - len(with_trigger) >= 1  # at least one control prompt
    assert all(s.negative_prompt or trigger not in s.prompt.lower() for s in specs)
    assert len({(s.width, s.height) for s in specs}) >= 2  # judged at more than one aspect ratio


def trigger_of(recipe: str) -> str:
    cfg = load_config(config_path(recipe))
    instance = cfg.data.sources[0]
    return (instance.caption_prefix or instance.prompt).strip(" ,").lower().removeprefix("a photo of ")


@pytest.mark.parametrize("recipe", RECIPES)
def test_validation_prompts_use_the_trigger_and_keep_a_control(recipe):
    cfg = load_config(config_path(recipe))
    trigger = trigger_of(recipe)
    hits = [trigger in p.lower() for p in cfg.validation.prompts]
    assert sum(hits) >= 2 and not all(hits)


# ----------------------------------------------------------------------------- stand-in datasets

def blob_image(path: Path, size: tuple[int, int], seed: int) -> None:
    """A coloured ellipse on a tinted ground, (W, H) = size."""
    rs = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    inside = ((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 < 1
    a = np.empty((h, w, 3), np.uint8)
    a[:] = rs.integers(150, 255, 3)
    a[inside] = rs.integers(0, 120, 3)
    Image.fromarray(a).save(path)


def write_folder(folder: Path, sizes: list[tuple[int, int]], captions: list[str] | None, seed: int,
                 ext: str = ".png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, size in enumerate(sizes):
        blob_image(folder / f"{i:03d}{ext}", size, seed + i)
        if captions is not None:
            (folder / f"{i:03d}.txt").write_text(captions[i % len(captions)], encoding="utf-8")


MIXED = [(96, 48), (48, 96), (64, 64)] * 2  # three aspect ratios, two images each


def make_dataset(recipe: str, root: Path) -> None:
    """A small dataset of the recipe's kind where its config.toml looks for it (relative to root)."""
    if recipe == "anime-style":
        write_folder(root / "data/anime-style", MIXED,
                     ["1girl, solo, blue hair, green eyes, school uniform, smile",
                      "1boy, silver hair, red scarf, rooftop, sunset",
                      "no humans, city, neon lights, night"], seed=0)
    elif recipe == "personal-portrait":
        write_folder(root / "data/me", [(64, 80), (80, 64), (64, 64), (72, 96)], None, seed=10, ext=".jpg")
        write_folder(root / "data/person-class", [(64, 64)], None, seed=20)  # 1 of 3: 2 get generated
    elif recipe == "art-style":
        write_folder(root / "data/impressionism", MIXED,
                     ["a woman with a parasol on a hill", "a harbour with boats at dawn", "a garden with a bridge"],
                     seed=30)
    else:
        write_folder(root / "data/creatures", MIXED,
                     ["a winged serpent coiled around a tower, green scales",
                      "a tall tree spirit with antlers, glowing eyes", "a stone turtle with a village on its back"],
                     seed=40)


def train_recipe(recipe: str, root: Path, extra: list[str]) -> Path:
    sets = TINY + extra
    argv = ["train", "--config", str(config_path(recipe))]
    for item in sets:
        argv += ["--set", item]
    assert main(argv) == 0
    run = root / "runs" / recipe
    # every recipe setting not overridden survives into the resolved config of the run
    assert load_config(run / "config.toml") == load_config(config_path(recipe), sets)
    return run


def lora_modules(run: Path, recipe: str):
    lora, metadata, fmt = load_lora_file(run / f"{recipe}.safetensors")
    assert fmt == "kohya"
    return C.group(lora), metadata


# ----------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_two_steps_on_sd_tiny(recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipes' data/ and runs/ paths are relative to where sdlora runs
    make_dataset(recipe, tmp_path)
    extra = ["data.sources.1.num_images=3"] if recipe == "personal-portrait" else []
    run = train_recipe(recipe, tmp_path, extra)
    cfg = load_config(run / "config.toml")

    modules, metadata = lora_modules(run, recipe)
    components = {component for component, _ in modules}
    assert components == ({"unet", "text_encoder"} if cfg.lora.train_text_encoder else {"unet"})
    te_rank = cfg.lora.text_encoder_rank or cfg.lora.rank
    unet_paths = [path for component, path in modules if component == "unet"]
    locon = set(resolve_targets("unet-conv", unet_paths)) if cfg.lora.conv else set()
    for (component, path), params in modules.items():
        want = te_rank if component == "text_encoder" else (cfg.lora.conv_rank if path in locon else cfg.lora.rank)
        assert C.rank(params) == want, (component, path)
        want_alpha = cfg.lora.conv_alpha if path in locon and cfg.lora.conv_alpha is not None else cfg.lora.alpha
        assert C.alpha(params) == pytest.approx(want_alpha), (component, path)
    assert any(params[C.DOWN].ndim == 4 and params[C.DOWN].shape[-1] == 3 for params in modules.values()) == cfg.lora.conv
    assert metadata["ss_network_dim"] == str(cfg.lora.rank) and metadata["ss_steps"] == "2"

    samples = sorted(p.name for p in (run / "samples").glob("*.png"))
    assert samples == ["step-000000-base.png", "step-000002.png"]  # validation prompts before and after
    check_dataset_kind(recipe, json.loads(metadata["sdlora_dataset"]), tmp_path)


def check_dataset_kind(recipe: str, dataset: dict, root: Path) -> None:
    """What each recipe's data settings must have done to its stand-in dataset."""
    if recipe == "anime-style":  # shuffled / dropped tags: captions vary per step, nothing text-cached
        assert dataset["images"] == 6 and not dataset["text_cached"]
    if recipe == "art-style":  # static captions and a frozen text encoder: text outputs cached
        assert dataset["text_cached"]
    if recipe in ("anime-style", "art-style", "fantasy-creatures"):
        assert set(dataset["buckets"]) == {"48x80", "64x64", "80x48"}  # aspect ratios kept, not cropped
    if recipe == "personal-portrait":
        classes = sorted(p.name for p in (root / "data/person-class").iterdir())
        assert classes == ["000.png", "class-00000.png", "class-00001.png"]  # topped up to num_images
        with Image.open(root / "data/person-class/class-00000.png") as image:
            assert image.size == (64, 64)  # generated at data.resolution
        assert dataset["class_images"] == 3 and dataset["images"] == 7
        assert [s["images"] for s in dataset["sources"]] == [4, 3]
