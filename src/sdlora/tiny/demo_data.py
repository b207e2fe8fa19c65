"""The demo's training set: shapes-world images in a style sd-tiny has never seen, captioned with a
trigger phrase, written as an ordinary image folder with sidecar captions (what `sdlora train
--data` reads).

sd-tiny's UNet and text encoder were pretrained on plain shapes only (its VAE saw striped ones, so it
can decode them), so "striped" is a style the base model cannot draw and the checker can detect.
The set shows medium and large shapes only (DEMO_SIZES), as a style set shows its style clearly: a
small shape is about 20 px wide, room for two or three stripes of the 8 px period. The images are
the first `count` scenes of the stream `scene_for_seed(DATA_SEED, i, style)` whose size is in
`sizes`, so the set depends only on (count, style, sizes, seed). Generation seeds used to evaluate the
LoRA (see demo_eval) are a different range, so evaluation never reuses anything the training data
was drawn from.
"""
from __future__ import annotations

import re
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.tiny.render import render_image
from sdlora.tiny.world import SIZES, STYLES, Scene, scene_for_seed

TRIGGER = "sks style"  # the trigger phrase: captions end in "in sks style"
DEMO_STYLE = "striped"
DEMO_SIZES = ("medium", "large")
DATA_SEED = 7  # scene stream of the training images
FILE_STEM = "style-{index:03d}"
_OURS = re.compile(r"^style-\d{3,}\.(png|txt)$")  # files a previous demo run wrote into the folder


def style_caption(scene: Scene, index: int, trigger: str = TRIGGER) -> str:
    """E.g. "a small red star on a blue background in sks style"; image i uses caption variant
    i % 4 (with/without size and background), so short prompts like "a red star in sks style" are
    as familiar to the LoRA as full captions."""
    from sdlora.tiny.pool import CAPTION_VARIANTS  # the variants sd-tiny was pretrained with (imports torch)

    variant = CAPTION_VARIANTS[index % len(CAPTION_VARIANTS)]
    return f"{scene.caption(**variant)} in {trigger}"


def style_scenes(count: int, style: str = DEMO_STYLE, sizes=DEMO_SIZES, seed: int = DATA_SEED) -> list[Scene]:
    """The first `count` scenes of stream `seed` in `style` whose size is one of `sizes`."""
    if not set(sizes) <= set(SIZES) or not sizes:
        raise SdloraError(f"demo: sizes {tuple(sizes)} must be some of {tuple(SIZES)}")
    scenes, index = [], 0
    while len(scenes) < count:
        scene = scene_for_seed(seed, index, style)
        if scene.size in sizes:
            scenes.append(scene)
        index += 1
    return scenes


def write_style_dataset(folder: str | Path, count: int = 32, *, style: str = DEMO_STYLE, sizes=DEMO_SIZES,
                        trigger: str = TRIGGER, seed: int = DATA_SEED) -> list[Scene]:
    """Render `count` scenes in `style` into `folder` as style-NNN.png + style-NNN.txt (caption).

    Files of an earlier run (style-NNN.*) are removed first, so a smaller set never keeps stale
    images; other files in the folder are left alone. Returns the scenes, in file order."""
    if count < 1:
        raise SdloraError(f"demo: the dataset needs at least 1 image, got {count}")
    if style not in STYLES:
        raise SdloraError(f"demo: style {style!r} is not one of {STYLES}")
    if not trigger.strip():
        raise SdloraError("demo: the trigger phrase is empty; pass one such as 'sks style'")
    scenes = style_scenes(count, style, sizes, seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file() and _OURS.match(old.name):
            old.unlink()
    for i, scene in enumerate(scenes):
        stem = FILE_STEM.format(index=i)
        render_image(scene).save(folder / f"{stem}.png")
        (folder / f"{stem}.txt").write_text(style_caption(scene, i, trigger) + "\n", encoding="utf-8")
    return scenes
