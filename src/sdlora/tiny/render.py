"""Deterministic rendering of shapes-world scenes (numpy + Pillow only).

Shapes are drawn at 4x resolution and box-downsampled, so edges are anti-aliased the same way on
every machine. A scene's pixels depend only on the scene, and a scene only on its seed.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from sdlora.tiny.world import (HOLLOW_WIDTH, IMAGE_SIZE, OUTLINE_WIDTH, OUTLINES, PALETTE, SHAPE_NAMES,
                               STRIPE_PERIOD, STRIPE_WIDTH, Scene, scene_for_seed)

SUPERSAMPLE = 4


def shape_alpha(shape: str, cx: float, cy: float, rx: float, ry: float | None = None,
                size: int = IMAGE_SIZE) -> np.ndarray:
    """Coverage of `shape` centred at (cx, cy) with radii (rx, ry) px: float32 (size, size) in [0, 1]."""
    ry = rx if ry is None else ry
    k = SUPERSAMPLE
    canvas = Image.new("L", (size * k, size * k), 0)
    draw = ImageDraw.Draw(canvas)
    outline = OUTLINES[shape]
    # Pixel centres sit at +0.5: map unit coordinates to supersampled pixel corners.
    if isinstance(outline, float):
        box = [k * (cx - outline * rx), k * (cy - outline * ry),
               k * (cx + outline * rx), k * (cy + outline * ry)]
        draw.ellipse(box, fill=255)
    else:
        draw.polygon([(k * (cx + u * rx), k * (cy + v * ry)) for u, v in outline], fill=255)
    small = canvas.reduce(k)
    return np.asarray(small, dtype=np.float32) / 255.0


def inset(alpha: np.ndarray, width: int) -> np.ndarray:
    """`alpha` (H, W) in [0, 1] shrunk inwards by `width` px (a min filter: grey-level erosion)."""
    image = Image.fromarray(np.rint(alpha * 255).astype(np.uint8), "L")
    return np.asarray(image.filter(ImageFilter.MinFilter(2 * width + 1)), dtype=np.float32) / 255.0


@lru_cache(maxsize=None)
def stripe_alpha(size: int = IMAGE_SIZE) -> np.ndarray:
    """Diagonal stripes along x + y = const, anti-aliased: float32 (size, size), 1 on a stripe."""
    k = SUPERSAMPLE
    y, x = np.mgrid[0:size * k, 0:size * k] / k
    on = ((x + y) % STRIPE_PERIOD) < STRIPE_WIDTH
    coverage = on.reshape(size, k, size, k).mean(axis=(1, 3)).astype(np.float32)
    coverage.setflags(write=False)
    return coverage


def render(scene: Scene) -> np.ndarray:
    """The scene as uint8 RGB pixels, shape (64, 64, 3)."""
    alpha = shape_alpha(scene.shape, scene.cx, scene.cy, scene.radius)
    if scene.style == "striped":
        inner = inset(alpha, OUTLINE_WIDTH)
        alpha = alpha - inner + inner * stripe_alpha()
    elif scene.style == "hollow":
        alpha = alpha - inset(alpha, HOLLOW_WIDTH)
    fg = np.asarray(PALETTE[scene.colour], dtype=np.float32)
    bg = np.asarray(PALETTE[scene.background], dtype=np.float32)
    pixels = bg + alpha[..., None] * (fg - bg)  # (64, 64, 3)
    return np.rint(pixels).astype(np.uint8)


def render_image(scene: Scene) -> Image.Image:
    """The scene as a PIL RGB image."""
    return Image.fromarray(render(scene), "RGB")


def render_seed(seed: int, index: int = 0, style: str = "plain",
                shapes: tuple[str, ...] = SHAPE_NAMES) -> tuple[np.ndarray, Scene]:
    """Pixels and scene of image `index` of the stream `seed` (shapes drawn from `shapes`)."""
    scene = scene_for_seed(seed, index, style, shapes)
    return render(scene), scene
