"""The shapes world: what a scene is, how one is drawn at random from a seed, and its caption.

A scene is one shape of a named colour on a plain background of another named colour, at one of
three sizes and a random position inside a 64x64 image. Everything is data: the palette, the shape
outlines (in unit coordinates, shared by the renderer and the checker) and the size radii.
Base pretraining data is always `style="plain"`; other styles exist for LoRA demos the base model
has never seen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sdlora.errors import SdloraError

IMAGE_SIZE = 64

# Named colours, far apart in RGB so that a blurred or noisy pixel still maps to the right name.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "purple": (140, 40, 180),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

# Shape half-extent in pixels (before a +-1 px jitter): roughly 20, 30 and 42 px wide.
SIZES: dict[str, float] = {"small": 10.0, "medium": 15.0, "large": 21.0}

STYLES: tuple[str, ...] = ("plain", "striped")
# "striped": a solid outline OUTLINE_WIDTH px wide (keeps the shape legible) around diagonal
# stripes of the foreground and background colours; period and stripe width in px at 64x64.
STRIPE_PERIOD, STRIPE_WIDTH, OUTLINE_WIDTH = 8, 4, 1
EDGE_MARGIN = 2.0  # px kept between a shape's extent and the image border


def _star(points: int = 5, inner: float = 0.45) -> tuple[tuple[float, float], ...]:
    verts = []
    for i in range(2 * points):
        r = 1.0 if i % 2 == 0 else inner
        a = -math.pi / 2 + i * math.pi / points
        verts.append((r * math.cos(a), r * math.sin(a)))
    return tuple(verts)


def _cross(half_width: float = 0.33) -> tuple[tuple[float, float], ...]:
    w = half_width
    return ((-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w),
            (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w))


# Outlines in unit coordinates (x right, y down, radius 1). "circle" is an ellipse of this radius.
SHAPES: dict[str, tuple[tuple[float, float], ...] | float] = {
    "circle": 0.92,
    "square": ((-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)),
    "triangle": ((0.0, -1.0), (0.97, 0.78), (-0.97, 0.78)),
    "star": _star(),
    "cross": _cross(),
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)


@dataclass(frozen=True)
class Scene:
    """One image's content. (cx, cy) is the shape centre in pixels, `radius` its half-extent."""

    shape: str
    colour: str
    background: str
    size: str
    cx: float
    cy: float
    radius: float
    style: str = "plain"

    def caption(self, *, size: bool = True, background: bool = True) -> str:
        """E.g. "a small red triangle on a blue background" (style is never named here)."""
        return caption(self.shape, self.colour, self.size if size else None,
                       self.background if background else None)


def caption(shape: str, colour: str, size: str | None = None, background: str | None = None) -> str:
    """The caption of a scene's attributes; `size`/`background` None leaves them out."""
    words = " ".join(w for w in (size, colour, shape) if w)
    text = f"{article(words)} {words}"
    if background:
        text += f" on {article(background)} {background} background"
    return text


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def sample_scene(rng: np.random.Generator, style: str = "plain") -> Scene:
    """A uniformly random scene: shape, colour, a different background colour, size, position."""
    if style not in STYLES:
        raise SdloraError(f"style {style!r} is not one of {STYLES}: pick one of those")
    shape = SHAPE_NAMES[rng.integers(len(SHAPE_NAMES))]
    colour = COLOURS[rng.integers(len(COLOURS))]
    others = [c for c in COLOURS if c != colour]
    background = others[rng.integers(len(others))]
    size = tuple(SIZES)[rng.integers(len(SIZES))]
    radius = SIZES[size] + rng.uniform(-1.0, 1.0)
    lo, hi = radius + EDGE_MARGIN, IMAGE_SIZE - radius - EDGE_MARGIN
    cx, cy = rng.uniform(lo, hi, size=2)
    return Scene(shape, colour, background, size, float(cx), float(cy), float(radius), style)


def scene_for_seed(seed: int, index: int = 0, style: str = "plain") -> Scene:
    """The scene number `index` of the stream `seed` (independent of every other index)."""
    return sample_scene(np.random.default_rng([seed, index]), style)
