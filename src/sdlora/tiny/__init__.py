"""sd-tiny and its shapes world: a small SD 1.x-architecture model that sdlora ships, trains from
scratch on procedurally rendered shapes, and reads back with a deterministic checker.

- `world`: palette, shapes, sizes, styles, scenes and captions; `render`: scenes to pixels.
- `checker.check(image) -> Reading(colour, background, shape, style)`.
- `arch`: sd-tiny's component configs; `pretrain`: `python -m sdlora.tiny.pretrain --out DIR`.
- `quality.evaluate_quality(model)`: colour/shape/style rates of generated images.
"""
from pathlib import Path

from sdlora.tiny.checker import Reading, check
from sdlora.tiny.render import render, render_image, render_seed
from sdlora.tiny.world import COLOURS, SHAPE_NAMES, SIZES, STYLES, Scene, caption, scene_for_seed

# Where the trained sd-tiny lives (diffusers layout; `--model tiny` resolves to it).
SD_TINY_DIR = Path(__file__).parent / "assets" / "sd-tiny"

__all__ = ["COLOURS", "SD_TINY_DIR", "SHAPE_NAMES", "SIZES", "STYLES", "Reading", "Scene", "caption",
           "check", "render", "render_image", "render_seed", "scene_for_seed"]
