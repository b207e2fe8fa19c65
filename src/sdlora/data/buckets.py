"""Aspect-ratio buckets as pure functions: which (W, H) sizes exist, which one an image goes to, and
how it is resized to cover its bucket and cropped.

Sizes are (width, height) in pixels throughout, like PIL.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sdlora.errors import SdloraError

Size = tuple[int, int]


@dataclass(frozen=True)
class BucketSpec:
    """The settings that decide the bucket list (from DataConfig)."""

    resolution: int = 512
    step: int = 64
    min_side: int = 256
    max_side: int = 1024
    enabled: bool = True  # False: one square bucket (resolution x resolution), SD's classic mode

    @classmethod
    def from_config(cls, cfg) -> "BucketSpec":
        return cls(cfg.resolution, cfg.bucket_step, cfg.min_bucket_side, cfg.max_bucket_side, cfg.buckets)


def make_buckets(spec: BucketSpec) -> list[Size]:
    """All bucket sizes: sides multiples of `step` within [min_side, max_side], area at most
    resolution^2, and for each width the largest such height. Sorted by aspect ratio (W/H)."""
    if not spec.enabled:
        return [(spec.resolution, spec.resolution)]
    step, area = spec.step, spec.resolution * spec.resolution
    if step > spec.resolution:
        raise SdloraError(f"data.bucket_step={step} is larger than data.resolution={spec.resolution}")
    # A min side above the resolution would leave no bucket: the square bucket is always allowed.
    lo = min(math.ceil(spec.min_side / step) * step, spec.resolution // step * step)
    hi = max(lo, min(spec.max_side, area // lo) // step * step)
    buckets = set()
    for w in range(lo, hi + 1, step):
        h = min(area // w // step * step, hi)
        if h >= lo:
            buckets.add((w, h))
            buckets.add((h, w))
    return sorted(buckets, key=lambda b: (b[0] / b[1], b[0]))


def assign_bucket(size: Size, buckets: list[Size]) -> Size:
    """The bucket whose aspect ratio is closest to the image's (compared as log ratios, so 2:1 and
    1:2 are equally far from 1:1); ties go to the larger area, then to the earlier bucket."""
    w, h = size
    target = math.log(w / h)
    return min(buckets, key=lambda b: (round(abs(math.log(b[0] / b[1]) - target), 9), -b[0] * b[1]))


def cover_size(size: Size, bucket: Size) -> Size:
    """The smallest resize of `size` (aspect kept) that covers `bucket` on both sides."""
    w, h = size
    scale = max(bucket[0] / w, bucket[1] / h)
    return max(bucket[0], round(w * scale)), max(bucket[1], round(h * scale))


def needs_upscale(size: Size, bucket: Size) -> bool:
    """True when the image has fewer pixels than its bucket along some side."""
    return size[0] < bucket[0] or size[1] < bucket[1]


def crop_box(resized: Size, bucket: Size, mode: str, rng: np.random.Generator | None = None) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the `bucket`-sized crop from an image resized to `resized`.
    `mode` is "center" or "random" (random needs `rng`)."""
    dx, dy = resized[0] - bucket[0], resized[1] - bucket[1]
    if mode == "random":
        left, top = int(rng.integers(0, dx + 1)), int(rng.integers(0, dy + 1))
    elif mode == "center":
        left, top = dx // 2, dy // 2
    else:
        raise SdloraError(f"data.crop: {mode!r} is not one of 'center', 'random'")
    return left, top, left + bucket[0], top + bucket[1]


def bucket_name(bucket: Size) -> str:
    return f"{bucket[0]}x{bucket[1]}"
