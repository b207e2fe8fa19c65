"""The shapes world: what a scene is, how one is drawn at random from a seed, and its caption.

A scene is one shape of a named colour on a plain background of another named colour, at one of
three sizes and a random position inside a 64x64 image. Everything is data: the palette, the shape
outlines (in unit coordinates, shared by the renderer and the checker) and the size radii.
Base pretraining data is always `style="plain"` with one of the five SHAPES; the other styles and
the NEW_SHAPES (heart, crescent, arrow) exist for LoRA demos: sd-tiny has never seen them.
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

STYLES: tuple[str, ...] = ("plain", "striped", "hollow")
# "striped": a solid outline OUTLINE_WIDTH px wide (keeps the shape legible) around diagonal
# stripes of the foreground and background colours; period and stripe width in px at 64x64.
STRIPE_PERIOD, STRIPE_WIDTH, OUTLINE_WIDTH = 8, 4, 1
# "hollow": only an outline HOLLOW_WIDTH px wide, the inside shows the background.
HOLLOW_WIDTH = 2
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


def _heart(n: int = 48) -> tuple[tuple[float, float], ...]:
    """The classic parametric heart, scaled to a unit half-extent (point down, lobes up)."""
    pts = []
    for i in range(n):
        t = 2 * math.pi * i / n
        x = 16 * math.sin(t) ** 3
        y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
        pts.append((x / 16.5, (y + 2.5) / 14.5))
    return tuple(pts)


def _crescent(n: int = 24, offset: float = 0.55, inner: float = 0.8) -> tuple[tuple[float, float], ...]:
    """A unit disc minus a disc of radius `inner` shifted right by `offset`: horns point right."""
    # where the circles cross: x^2 + y^2 = 1 and (x - offset)^2 + y^2 = inner^2
    xc = (1 + offset ** 2 - inner ** 2) / (2 * offset)
    a_out = math.atan2(math.sqrt(1 - xc ** 2), xc)  # outer arc runs from a_out to 2*pi - a_out
    a_in = math.atan2(math.sqrt(1 - xc ** 2), xc - offset)
    outer = [(math.cos(a), math.sin(a)) for a in (a_out + (2 * math.pi - 2 * a_out) * i / n for i in range(n + 1))]
    # back along the inner circle through its leftmost point (angle pi)
    inside = [(offset + inner * math.cos(a), inner * math.sin(a))
              for a in (2 * math.pi - a_in - (2 * math.pi - 2 * a_in) * i / n for i in range(1, n))]
    return tuple(outer + inside)


def _arrow(shaft: float = 0.28, head: float = 0.8, neck: float = 0.1) -> tuple[tuple[float, float], ...]:
    """An arrow pointing right: a shaft of half-height `shaft`, a head from x = `neck`."""
    return ((-1, -shaft), (neck, -shaft), (neck, -head), (1, 0), (neck, head), (neck, shaft), (-1, shaft))


# Outlines in unit coordinates (x right, y down, radius 1). "circle" is an ellipse of this radius.
SHAPES: dict[str, tuple[tuple[float, float], ...] | float] = {
    "circle": 0.92,
    "square": ((-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)),
    "triangle": ((0.0, -1.0), (0.97, 0.78), (-0.97, 0.78)),
    "star": _star(),
    "cross": _cross(),
}
SHAPE_NAMES: tuple[str, ...] = tuple(SHAPES)
# Shapes sd-tiny never saw (the subject and concept demos teach them); the checker knows all of them.
NEW_SHAPES: dict[str, tuple[tuple[float, float], ...]] = {
    "heart": _heart(),
    "crescent": _crescent(),
    "arrow": _arrow(),
}
OUTLINES: dict[str, tuple[tuple[float, float], ...] | float] = {**SHAPES, **NEW_SHAPES}
ALL_SHAPE_NAMES: tuple[str, ...] = tuple(OUTLINES)


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


def sample_scene(rng: np.random.Generator, style: str = "plain", shapes: tuple[str, ...] = SHAPE_NAMES) -> Scene:
    """A uniformly random scene: shape (one of `shapes`), colour, a different background colour,
    size, position."""
    if style not in STYLES:
        raise SdloraError(f"style {style!r} is not one of {STYLES}: pick one of those")
    unknown = [name for name in shapes if name not in OUTLINES]
    if unknown or not shapes:
        raise SdloraError(f"shapes {unknown or '()'} are not some of {ALL_SHAPE_NAMES}: pick from those")
    shape = shapes[rng.integers(len(shapes))]
    colour = COLOURS[rng.integers(len(COLOURS))]
    others = [c for c in COLOURS if c != colour]
    background = others[rng.integers(len(others))]
    size = tuple(SIZES)[rng.integers(len(SIZES))]
    radius = SIZES[size] + rng.uniform(-1.0, 1.0)
    lo, hi = radius + EDGE_MARGIN, IMAGE_SIZE - radius - EDGE_MARGIN
    cx, cy = rng.uniform(lo, hi, size=2)
    return Scene(shape, colour, background, size, float(cx), float(cy), float(radius), style)


def scene_for_seed(seed: int, index: int = 0, style: str = "plain", shapes: tuple[str, ...] = SHAPE_NAMES) -> Scene:
    """The scene number `index` of the stream `seed` (independent of every other index)."""
    return sample_scene(np.random.default_rng([seed, index]), style, tuple(shapes))
