"""From a file to a training tensor: decode once, resize to cover the bucket, crop, maybe flip.

Output: float32 (3, H, W) in [-1, 1], H and W the bucket's, channels RGB.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sdlora.data.buckets import Size, cover_size, crop_box
from sdlora.data.images import load_rgb


def fit_to_bucket(img: Image.Image, bucket: Size, crop: str, rng: np.random.Generator | None = None) -> Image.Image:
    """Resize `img` (aspect kept) to cover `bucket`, then crop it to exactly `bucket`."""
    target = cover_size(img.size, bucket)
    if img.size != target:
        # Pillow's filters are antialiased (support scales with the shrink factor); bicubic is ~1.5x cheaper
        # than Lanczos at nearly the same quality, and reducing_gap box-shrinks very large images first.
        img = img.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    box = crop_box(img.size, bucket, crop, rng)
    return img.crop(box) if img.size != bucket else img


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 (3, H, W) in [-1, 1].

    Done in numpy on a contiguous array: torch's intra-op threads make these small elementwise ops
    20-50x slower on a busy machine (and DataLoader workers gain nothing from them)."""
    chw = np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)).astype(np.float32)  # (3, H, W)
    chw /= 127.5
    chw -= 1.0
    return torch.from_numpy(chw)


def load_pixels(path: str, size: Size, bucket: Size, *, crop: str, flip: bool, background: tuple[int, int, int],
                max_pixels: int, rng: np.random.Generator | None = None) -> torch.Tensor:
    """The training tensor of one image (`size` is its displayed size from the scan, used to let JPEG
    decode at a reduced scale when the image is much larger than the bucket needs)."""
    img = load_rgb(path, background=background, max_pixels=max_pixels, draft=cover_size(size, bucket))
    img = fit_to_bucket(img, bucket, crop, rng)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor(img)
