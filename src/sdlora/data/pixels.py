"""From a file to a training tensor: decode once, resize to cover the bucket, crop, maybe flip.

Output: `pixel_values` float32 (3, H, W) in [-1, 1], H and W the bucket's, channels RGB; with masks on,
also `loss_mask` float32 (1, H/f, W/f) (f the VAE's factor, 8 for SD), the image's mask put through the same resize, crop box and
flip (see `sdlora.data.masks`).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sdlora.data.buckets import Size, cover_size, crop_box
from sdlora.data.images import decode_image, to_rgb
from sdlora.data.masks import LATENT_FACTOR, MaskSource, latent_mask, load_mask

Box = tuple[int, int, int, int]


def bucket_geometry(size: Size, bucket: Size, crop: str, rng: np.random.Generator | None = None) -> tuple[Size, Box]:
    """(resized size, crop box) taking an image of `size` (aspect kept) to exactly `bucket`."""
    target = cover_size(size, bucket)
    return target, crop_box(target, bucket, crop, rng)


def apply_geometry(img: Image.Image, target: Size, box: Box) -> Image.Image:
    """Resize `img` to `target`, then crop `box` (a mask goes through this exactly like its image)."""
    if img.size != target:
        # Pillow's filters are antialiased (support scales with the shrink factor); bicubic is ~1.5x cheaper
        # than Lanczos at nearly the same quality, and reducing_gap box-shrinks very large images first.
        img = img.resize(target, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return img.crop(box) if img.size != (box[2] - box[0], box[3] - box[1]) else img


def fit_to_bucket(img: Image.Image, bucket: Size, crop: str, rng: np.random.Generator | None = None) -> Image.Image:
    """Resize `img` (aspect kept) to cover `bucket`, then crop it to exactly `bucket`."""
    return apply_geometry(img, *bucket_geometry(img.size, bucket, crop, rng))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 (3, H, W) in [-1, 1].

    Done in numpy on a contiguous array: torch's intra-op threads make these small elementwise ops
    20-50x slower on a busy machine (and DataLoader workers gain nothing from them)."""
    chw = np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)).astype(np.float32)  # (3, H, W)
    chw /= 127.5
    chw -= 1.0
    return torch.from_numpy(chw)


def load_sample(path: str, size: Size, bucket: Size, *, crop: str, flip: bool, background: tuple[int, int, int],
                max_pixels: int, rng: np.random.Generator | None = None, mask: MaskSource | None = None,
                latent_factor: int = LATENT_FACTOR) -> dict:
    """{"pixel_values"[, "loss_mask"]} of one image (`size` is its displayed size from the scan, used to
    let JPEG decode at a reduced scale when the image is much larger than the bucket needs; `mask`
    None means masks are off)."""
    img = decode_image(path, max_pixels=max_pixels, draft=cover_size(size, bucket))
    grey = load_mask(mask, img, max_pixels) if mask is not None else None
    rgb = to_rgb(img, background)
    target, box = bucket_geometry(rgb.size, bucket, crop, rng)
    layers = [apply_geometry(im, target, box) if im is not None else None for im in (rgb, grey)]
    if flip:
        layers = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if im is not None else None for im in layers]
    out = {"pixel_values": to_tensor(layers[0])}
    if mask is not None:
        out["loss_mask"] = latent_mask(layers[1], bucket, latent_factor)
    return out


def load_pixels(path: str, size: Size, bucket: Size, *, crop: str, flip: bool, background: tuple[int, int, int],
                max_pixels: int, rng: np.random.Generator | None = None) -> torch.Tensor:
    """The training tensor of one image (masks off)."""
    return load_sample(path, size, bucket, crop=crop, flip=flip, background=background, max_pixels=max_pixels,
                       rng=rng)["pixel_values"]
