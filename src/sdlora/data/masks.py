"""Per-image loss masks: where each image's mask comes from, and its form at latent resolution.

`data.masks`:
- "off": no masks; batches carry no `loss_mask`.
- "alpha": the image's own alpha channel (opaque = train, transparent = ignore, partly = weight). The
  pixels are still composited on `data.background`. An image without transparency trains everywhere.
- "folder": a mask file per image, `<mask_dir>/<the image's path inside its source folder, as .png>`
  (a flat folder: `<mask_dir>/<stem>.png`), white = train, black = ignore, grey = weight (colour
  masks are read as grey, transparent parts as black). `mask_dir` is the source's own
  (`data.sources[i].mask_dir`) or `data.mask_dir`; it must lie outside the source folder (or be a
  hidden folder inside it, e.g. `.masks`), so masks are never read as training images.
  An image without a mask file trains everywhere (warned, listed by `sdlora dataset inspect`).
  A mask whose size differs from its image's (as displayed, EXIF orientation applied), or that cannot
  be decoded, stops the build with one line naming it: a mask drawn for another crop or resolution is
  a mistake that resizing would hide.

The mask follows the pixels through the same resize, crop box and flip (`pixels.load_sample`), then is
averaged over f x f blocks to latent resolution, f the VAE's downsampling factor (8 for SD):
`loss_mask` float32 (1, H/f, W/f) in [0, 1]. The block sums are integers, so the result does not depend on summation order (a flipped mask is exactly the
flipped latent mask, which the latent cache relies on).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from sdlora.data.buckets import Size
from sdlora.data.files import shown
from sdlora.data.images import BadImage, decode_image, has_alpha, probe_image, read_image_file, to_rgb
from sdlora.errors import SdloraError

log = logging.getLogger("sdlora.data")

MASK_EXTENSION = ".png"
LATENT_FACTOR = 8  # SD's VAE: pixels per latent cell along each side (sd-tiny's is 4; see cache.vae_factor)
MASK_VERSION = "1"  # bump when the mask pipeline changes (part of the latent cache key)


class MaskSource(NamedTuple):
    """Where one image's mask comes from: kind "alpha", "file" (with `path`) or "full" (train everywhere)."""

    kind: str
    path: str | None = None


@dataclass
class MaskScan:
    """What `find_masks` saw: counts and the problem cases, as printable paths."""

    mode: str
    found: int = 0
    missing: list[str] = field(default_factory=list)  # images without a mask: trained everywhere
    mismatched: list[dict] = field(default_factory=list)  # {"image", "mask", "image_size", "mask_size"}
    bad: list[dict] = field(default_factory=list)  # {"mask", "reason"}: mask files that cannot be decoded

    def summary(self) -> dict:
        return {"mode": self.mode, "found": self.found, "missing": len(self.missing),
                "mismatched": len(self.mismatched), "bad": len(self.bad), "missing_examples": self.missing[:5],
                "mismatched_list": self.mismatched, "bad_list": self.bad}


def _hidden_inside(folder: Path, root: Path) -> bool | None:
    """None when `folder` is outside `root`; else whether a hidden part between them keeps it unscanned."""
    try:
        rel = folder.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def mask_dirs(cfg) -> dict[int, Path]:
    """{source index: its mask folder} for data.masks = "folder"; SdloraError naming the key when one is
    missing, not a folder, or would be scanned as part of its source."""
    out = {}
    for i, source in enumerate(cfg.sources):
        key = f"data.sources[{i}].mask_dir" if source.mask_dir else "data.mask_dir"
        value = source.mask_dir or cfg.mask_dir
        if not value:
            raise SdloraError(f"data.masks = \"folder\" needs data.mask_dir (or data.sources[{i}].mask_dir): "
                              "the folder holding one <image stem>.png mask per image")
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise SdloraError(f"{key}: {shown(folder)} is not a folder")
        if _hidden_inside(folder, Path(source.path).expanduser()) is False:
            raise SdloraError(f"{key}: {shown(folder)} lies inside data.sources[{i}].path, so its masks would "
                              "be trained on as images; move it out (or name it `.masks`)")
        out[i] = folder
    return out


def mask_file(root: Path, image: Path, folder: Path) -> Path:
    """`folder/<image's path relative to root>` with the .png extension."""
    return (folder / Path(image).relative_to(root)).with_suffix(MASK_EXTENSION)


def _probe_mask(path: Path, max_pixels: int) -> tuple[str, Size]:
    data = read_image_file(path, max_pixels)
    info = probe_image(data, max_pixels)
    return hashlib.sha1(data).hexdigest(), (info.width, info.height)


def _find_file(rec, root: Path, folder: Path, scan: MaskScan, max_pixels: int) -> None:
    path = mask_file(root, Path(rec.path), folder)
    if not os.path.lexists(path):
        scan.missing.append(shown(rec.path))
        return
    try:
        digest, size = _probe_mask(path, max_pixels)
    except BadImage as exc:
        scan.bad.append({"mask": shown(path), "reason": exc.reason})
        return
    except Exception as exc:  # a decoder bug on a hostile file is still just a bad mask (as in the scan)
        scan.bad.append({"mask": shown(path), "reason": f"corrupt image data: {type(exc).__name__}: {exc}"})
        return
    if size != rec.size:
        scan.mismatched.append({"image": shown(rec.path), "mask": shown(path), "image_size": list(rec.size),
                                "mask_size": list(size)})
        return
    rec.mask, rec.mask_digest = str(path), digest
    scan.found += 1


def find_masks(scans, cfg) -> MaskScan:
    """Look up every scanned record's mask (setting `rec.mask`/`rec.mask_digest` for mask files found);
    never raises for a bad mask file (see `check_masks`)."""
    result = MaskScan(cfg.masks)
    if cfg.masks == "alpha":
        for rec in (r for s in scans for r in s.records):
            if rec.alpha:
                result.found += 1
            else:
                result.missing.append(shown(rec.path))
    elif cfg.masks == "folder":
        folders = mask_dirs(cfg)
        for s in scans:
            for rec in s.records:
                _find_file(rec, Path(s.path), folders[s.index], result, cfg.max_image_pixels)
    return result


def check_masks(scan: MaskScan) -> None:
    """Before training: SdloraError for a mask that cannot be used, a warning for images without one."""
    if scan.mismatched:
        m = scan.mismatched[0]
        raise SdloraError(f"{len(scan.mismatched)} masks differ in size from their images (e.g. {m['mask']} is "
                          f"{m['mask_size'][0]}x{m['mask_size'][1]}, {m['image']} is {m['image_size'][0]}x"
                          f"{m['image_size'][1]}); save each mask at its image's size (`sdlora dataset inspect` "
                          "lists them)")
    if scan.bad:
        b = scan.bad[0]
        raise SdloraError(f"{len(scan.bad)} mask files cannot be read (e.g. {b['mask']}: {b['reason']}); "
                          "replace them or remove them (the image then trains everywhere)")
    if scan.mode != "off":
        log.info("loss masks (%s): %d found, %d missing", scan.mode, scan.found, len(scan.missing))
    if scan.missing:
        what = "have no alpha channel" if scan.mode == "alpha" else "have no mask file"
        log.warning("%d of %d images %s and train on the whole image (e.g. %s)", len(scan.missing),
                    len(scan.missing) + scan.found, what, scan.missing[0])


def mask_source(rec, mode: str) -> MaskSource | None:
    """Where `rec`'s mask comes from under data.masks = `mode` (None when masks are off)."""
    if mode == "off":
        return None
    if mode == "alpha" and rec.alpha:
        return MaskSource("alpha")
    if mode == "folder" and rec.mask:
        return MaskSource("file", rec.mask)
    return MaskSource("full")


def mask_identity(rec, mode: str) -> str | None:
    """What the mask of `rec` depends on besides its image (for cache keys); None when masks are off."""
    source = mask_source(rec, mode)
    if source is None:
        return None
    detail = rec.mask_digest if source.kind == "file" else ""
    return f"{source.kind}:{detail}:v{MASK_VERSION}"


def load_mask(source: MaskSource, image: Image.Image, max_pixels: int) -> Image.Image | None:
    """The mask as an 8-bit grey image at the mask file's or `image`'s size (None: train everywhere).
    `image` is the decoded image before RGB conversion (its alpha channel)."""
    if source.kind == "alpha":
        return image.convert("RGBA").getchannel("A") if has_alpha(image) else None
    if source.kind == "file":
        return to_rgb(decode_image(source.path, max_pixels=max_pixels), (0, 0, 0)).convert("L")
    return None


def latent_mask(mask: Image.Image | None, bucket: Size, factor: int = LATENT_FACTOR) -> torch.Tensor:
    """A bucket-sized grey mask (None: all white) -> float32 (1, H/f, W/f) in [0, 1] by f x f block means."""
    w, h = bucket[0] // factor, bucket[1] // factor
    if w * factor != bucket[0] or h * factor != bucket[1]:
        raise ValueError(f"bucket {bucket} is not a multiple of the latent factor {factor}")
    if mask is None:
        return torch.ones(1, h, w)
    if mask.size != tuple(bucket):
        raise ValueError(f"mask of size {mask.size} for bucket {bucket}")
    blocks = np.asarray(mask, dtype=np.int32).reshape(h, factor, w, factor)
    sums = blocks.sum(axis=(1, 3))  # (h, w) exact integers, whatever the order
    out = sums.astype(np.float32) / np.float32(255 * factor * factor)
    return torch.from_numpy(out[None])
