"""Training sets of the subject and concept demo tasks: shapes sd-tiny has never seen (world.NEW_SHAPES),
rendered and captioned as ordinary image folders with sidecar captions (what `sdlora train --data` reads).

- subject (the DreamBooth / personal-portrait analogue): SUBJECT_IMAGES images of ONE new shape in one
  or two colours, captioned with a rare trigger plus a class word: "a red sks shape on a blue background".
- concept (the fantasy-creatures analogue): ~100 images of a new shape under its own word, "a green heart
  on a white background", in only some colours (the others are held out for the evaluation) and at
  medium and large sizes, plus half as many "replay" images of the five shapes sd-tiny knows in the
  same colours, captioned as it was pretrained: trained on hearts alone, a 120-step LoRA drew circles for
  half of the prompts of the other shapes (8 prompts). Replay in every colour taught the LoRA to stay off
  for the held-out colours (it saw them only without hearts): 27.5% hearts there against 42.5% with replay
  in the concept's colours (600 steps, benchmarks/RESULTS.md). Each concept and replay image comes with a
  loss mask (`mask_dir`): weight 1 on the shape, MASK_BACKGROUND on the plain background.

A set depends only on its arguments: image i is the i-th scene of stream `seed` (new shape only) whose
colour and size are allowed. Evaluation seeds (demo_eval) are a disjoint range.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from sdlora.errors import SdloraError
from sdlora.tiny.render import render_image, shape_alpha
from sdlora.tiny.world import COLOURS, NEW_SHAPES, SIZES, Scene, caption, scene_for_seed

SUBJECT_SHAPE, SUBJECT_COLOURS, SUBJECT_IMAGES = "crescent", ("red", "yellow"), 8
SUBJECT_TOKEN, CLASS_WORD = "sks", "shape"  # "a red sks shape"; the bare class: "a red shape"
CONCEPT_SHAPE = "heart"
CONCEPT_COLOURS = ("red", "orange", "yellow", "green", "white")  # blue, purple and black are held out
CONCEPT_IMAGES = 100
CONCEPT_SIZES = ("medium", "large")  # small hearts (~20 px, 5 latent pixels) slowed learning: 0% -> 15% without them
SET_SEED = 17
# Replay images per concept image: half as many as hearts. With uniform timesteps that cost the heart (held-out
# colours 77.5 / 57.5 / 67.5% on training seeds 42, 1, 2 against 85.0 / 82.5 / 90.0% with a quarter, which
# lost 12.5 / 2.5 / 10.0 points on the known shapes); with the recipe's noisier timesteps (logit-normal,
# mean 1) the heart holds and the known shapes keep their rates (benchmarks/RESULTS.md, 2026-12-02).
REPLAY_SHARE = 0.5
# Loss masks: the shape's silhouette grown by MASK_GROW px weighs 1, the background MASK_BACKGROUND. The
# background is a flat colour sd-tiny already draws; the outline is what is new. Hearts in held-out colours,
# seeds 42 / 1 / 2: 77.5 / 57.5 / 67.5% with masks against 70.0 / 50.0 / 62.5% without (background 0.1:
# 55.0 / 50.0% on seeds 1 / 2).
MASK_BACKGROUND, MASK_GROW = 0.25, 2
_OURS = re.compile(r"^(subject|concept|replay)-\d{3,}\.(png|txt)$")  # files an earlier run wrote


def held_out(colours: tuple[str, ...]) -> tuple[str, ...]:
    """The palette colours not in `colours`, in palette order."""
    return tuple(c for c in COLOURS if c not in colours)


def new_shape_scenes(shape: str, count: int, colours: tuple[str, ...], sizes=tuple(SIZES),
                     seed: int = SET_SEED) -> list[Scene]:
    """The first `count` scenes of `shape` in one of `colours` and `sizes` (plain style)."""
    if shape not in NEW_SHAPES:
        raise SdloraError(f"demo: {shape!r} is not one of the new shapes {tuple(NEW_SHAPES)}")
    if not colours or not set(colours) <= set(COLOURS):
        raise SdloraError(f"demo: colours {tuple(colours)} must be some of {COLOURS}")
    scenes, index = [], 0
    while len(scenes) < count:
        scene = scene_for_seed(seed, index, "plain", (shape,))
        if scene.colour in colours and scene.size in sizes:
            scenes.append(scene)
        index += 1
    return scenes


def _variant(index: int) -> dict[str, bool]:
    from sdlora.tiny.pool import CAPTION_VARIANTS  # the variants sd-tiny was pretrained with (imports torch)

    return CAPTION_VARIANTS[index % len(CAPTION_VARIANTS)]


def subject_caption(scene: Scene, index: int, token: str = SUBJECT_TOKEN, class_word: str = CLASS_WORD) -> str:
    """E.g. "a red sks shape on a blue background" (size and background vary with the index)."""
    v = _variant(index)
    return caption(f"{token} {class_word}", scene.colour, scene.size if v["size"] else None,
                   scene.background if v["background"] else None)


def concept_caption(scene: Scene, index: int) -> str:
    """E.g. "a large green heart": the new word as a shape word, like the five sd-tiny knows."""
    return scene.caption(**_variant(index))


def loss_mask(scene: Scene, background: float = MASK_BACKGROUND, grow: int = MASK_GROW) -> Image.Image:
    """The scene's loss mask (`data.masks = "folder"`): 255 on its shape's silhouette grown by `grow` px
    (the anti-aliased edge and the outline's surroundings included), round(255 * background) elsewhere."""
    silhouette = (shape_alpha(scene.shape, scene.cx, scene.cy, scene.radius) > 0).astype(np.uint8) * 255
    inside = np.asarray(Image.fromarray(silhouette).filter(ImageFilter.MaxFilter(2 * grow + 1))) > 0
    return Image.fromarray(np.where(inside, 255, round(255 * background)).astype(np.uint8), "L")


def write_set(folder: str | Path, stem: str, scenes: list[Scene], captions: list[str], *,
              clean: bool = True, mask_dir: str | Path | None = None) -> list[Scene]:
    """Render `scenes` as <stem>-NNN.png + .txt into `folder` (`clean`: earlier subject/concept/replay
    files removed first, from `mask_dir` too), and with `mask_dir` a loss mask <stem>-NNN.png there."""
    folders = [Path(folder)] + ([Path(mask_dir)] if mask_dir is not None else [])
    for each in folders:
        each.mkdir(parents=True, exist_ok=True)
        for old in each.iterdir() if clean else ():
            if old.is_file() and _OURS.match(old.name):
                old.unlink()
    for i, (scene, text) in enumerate(zip(scenes, captions)):
        render_image(scene).save(folders[0] / f"{stem}-{i:03d}.png")
        (folders[0] / f"{stem}-{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
        if mask_dir is not None:
            loss_mask(scene).save(folders[1] / f"{stem}-{i:03d}.png")
    return scenes


def write_subject_dataset(folder: str | Path, count: int = SUBJECT_IMAGES, *, shape: str = SUBJECT_SHAPE,
                          colours: tuple[str, ...] = SUBJECT_COLOURS) -> list[Scene]:
    """The subject's few images (medium and large, so its outline is clear), the colours in turn (the demo's:
    4 red, 4 yellow), with trigger + class captions. The first 8 scenes in either colour were 7 yellow and 1 red:
    identity in unseen colours 65.0 / 47.5% (training seeds 42 / 1) against 82.5 / 67.5% balanced
    (benchmarks/RESULTS.md, 2026-12-02 16:25 UTC)."""
    per_colour = -(-count // len(colours))
    each = [new_shape_scenes(shape, per_colour, (colour,), ("medium", "large")) for colour in colours]
    scenes = [each[i % len(colours)][i // len(colours)] for i in range(count)]
    return write_set(folder, "subject", scenes, [subject_caption(s, i) for i, s in enumerate(scenes)])


def write_concept_dataset(folder: str | Path, count: int = CONCEPT_IMAGES, *, shape: str = CONCEPT_SHAPE,
                          colours: tuple[str, ...] = CONCEPT_COLOURS, replay_colours: tuple[str, ...] | None = None,
                          sizes: tuple[str, ...] = CONCEPT_SIZES, mask_dir: str | Path | None = None) -> list[Scene]:
    """The concept's captioned images in `colours` and `sizes` only, then round(REPLAY_SHARE * count)
    replay images of the five pretraining shapes in `replay_colours` (default: `colours`, so no image at
    all shows a held-out colour); with `mask_dir`, a loss mask per image there. Returns the concept's scenes."""
    replay_colours = colours if replay_colours is None else replay_colours
    scenes = new_shape_scenes(shape, count, colours, sizes)
    write_set(folder, "concept", scenes, [concept_caption(s, i) for i, s in enumerate(scenes)], mask_dir=mask_dir)
    replay, index = [], 0
    while len(replay) < round(REPLAY_SHARE * count):
        scene = scene_for_seed(SET_SEED + 1, index)
        index += 1
        if scene.colour in replay_colours:
            replay.append(scene)
    write_set(folder, "replay", replay, [concept_caption(s, i) for i, s in enumerate(replay)], clean=False,
              mask_dir=mask_dir)
    return scenes
