"""Safe image decoding: what every file with an image extension gets, good or bad.

Two entry points:
- `probe_image(data, max_pixels)` checks a file's bytes at scan time: header, pixel limit, PNG chunk
  CRCs, WebP's declared size, then a full decode (JPEG at 1/8 scale: every byte of its entropy data
  is still read), so a file the scan accepts is one training can decode: `dataset inspect`, the
  uncached and the cached paths all see the same usable images.
- `read_image_file(path, max_pixels)`: the file's bytes under the reading policy of
  `sdlora.data.files` (regular files only, a byte limit derived from the pixel limit).
- `decode_image(path, max_pixels=..., draft=...)` decodes once for training: EXIF orientation
  applied, the file's own mode kept (its alpha channel is a loss mask with `data.masks = "alpha"`).
- `load_rgb(path, background=..., max_pixels=..., draft=...)`: `decode_image`, then `to_rgb`:
  transparency composited on `background`, CMYK / 16-bit / grayscale / palette converted to 8-bit RGB.

A bad file raises `BadImage(code, reason)`; callers list it once and go on.
"""
from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor, ImageOps, UnidentifiedImageError, features

from sdlora.data.files import REFUSALS, FileRefused, image_byte_limit, read_regular
from sdlora.errors import SdloraError

# Pillow plugins we let identify a file: never EPS/PDF/etc. (external programs, odd parsers).
# (JPEG's opener also returns MPO, the multi-picture JPEG of many cameras.)
Image.init()
SAFE_FORMATS = [f for f in ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF", "AVIF") if f in Image.OPEN]
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"}
                             | ({".avif"} if "AVIF" in SAFE_FORMATS and features.check("avif") else set()))

# Skip codes (stable strings for reports) -> what a user reads.
SKIP_CODES = {
    "empty": "empty file (0 bytes)",
    "not_image": "not an image in a supported format",
    "truncated": "truncated file",
    "corrupt": "corrupt image data",
    "too_large": "too many pixels (decompression-bomb guard, data.max_image_pixels)",
    "too_small": "smaller than its bucket and data.no_upscale is set",
    **REFUSALS,  # not_regular, file_too_big, unreadable: the reading policy's refusals
}
# EXIF orientations 5-8 rotate by 90 degrees: stored width and height swap on display.
_TRANSPOSED = {5, 6, 7, 8}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
# What Pillow raises for a bad file while decoding (anything else is a bug, ours or Pillow's).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, struct.error, EOFError)


class BadImage(Exception):
    """An image file that cannot be used; `code` is a key of SKIP_CODES."""

    def __init__(self, code: str, detail: str = ""):
        self.code, self.detail = code, detail
        self.reason = SKIP_CODES[code] + (f": {detail}" if detail else "")
        super().__init__(self.reason)

    def __reduce__(self):  # crosses DataLoader worker processes
        return type(self), (self.code, self.detail)

    @classmethod
    def refused(cls, exc: FileRefused) -> "BadImage":
        return cls(exc.code, exc.detail)


@dataclass(frozen=True)
class ImageInfo:
    width: int  # as displayed, i.e. after EXIF orientation
    height: int
    format: str
    mode: str
    alpha: bool = False  # has transparency (an alpha channel or a transparent palette colour)


def parse_background(text: str) -> tuple[int, int, int]:
    """`white`, `#808080`, `rgb(0,0,0)` -> an RGB triple; SdloraError names data.background."""
    try:
        return ImageColor.getrgb(text)[:3]
    except ValueError:
        raise SdloraError(f"data.background: {text!r} is not a colour (use a name like `white` or `#rrggbb`)") from None


def _open(fp, max_pixels: int) -> Image.Image:
    """Image.open restricted to SAFE_FORMATS, with our own pixel limit checked from the header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: we apply our own limit
            img = Image.open(fp, formats=SAFE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise BadImage("too_large", f"over Pillow's hard limit of {2 * Image.MAX_IMAGE_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise BadImage("not_image") from None
    except DECODE_ERRORS as exc:
        raise BadImage("corrupt", str(exc)) from None
    w, h = img.size
    if w * h > max_pixels:
        raise BadImage("too_large", f"{w}x{h} = {w * h:,} pixels > {max_pixels:,}")
    if w <= 0 or h <= 0:
        raise BadImage("corrupt", f"size {w}x{h}")
    return img


def _orientation(img: Image.Image, data: bytes | None = None) -> int:
    if img.format == "PNG" and data is not None and b"eXIf" not in data:
        return 1  # PNG's getexif() decodes the whole image to look for a late eXIf chunk: skip when absent
    try:
        return int(img.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not reject a decodable image
        return 1


def _decode_error(exc: Exception) -> BadImage:
    truncated = "truncat" in str(exc).lower() or isinstance(exc, EOFError)
    return BadImage("truncated" if truncated else "corrupt", str(exc))


def _check_riff(data: bytes) -> None:
    """WebP is a RIFF file: its header states the file's size, so a shorter file is cut off."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        declared = struct.unpack("<I", data[4:8])[0] + 8
        if declared > len(data):
            raise BadImage("truncated", f"{len(data):,} of {declared:,} bytes")


def _full_decode(data: bytes, max_pixels: int) -> None:
    """Decode every pixel once (JPEG at 1/8 scale) and throw them away; BadImage when that fails."""
    img = _open(io.BytesIO(data), max_pixels)
    if img.format in ("JPEG", "MPO"):
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
    try:
        img.load()
    except DECODE_ERRORS as exc:
        raise _decode_error(exc) from None


def probe_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Check one file's bytes fully; raise BadImage or return its displayed size."""
    if not data:
        raise BadImage("empty")
    _check_riff(data)
    img = _open(io.BytesIO(data), max_pixels)
    fmt, mode, (w, h) = img.format or "?", img.mode, img.size
    if fmt == "PNG":
        try:
            img.verify()  # walks every chunk and checks its CRC (decoding does not)
        except DECODE_ERRORS as exc:
            raise _decode_error(exc) from None
        img = _open(io.BytesIO(data), max_pixels)  # verify() leaves the image unusable
    _full_decode(data, max_pixels)
    orientation = _orientation(img, data)
    if orientation in _TRANSPOSED:
        w, h = h, w
    return ImageInfo(w, h, fmt, mode, has_alpha(img))


def read_image_file(path: str | Path, max_pixels: int) -> bytes:
    """The bytes of an image file under the reading policy; BadImage when it may not be read."""
    try:
        return read_regular(path, image_byte_limit(max_pixels))
    except FileRefused as exc:
        raise BadImage.refused(exc) from None


def has_alpha(img: Image.Image) -> bool:
    """True when `img` carries transparency: an alpha channel or a transparent palette/colour entry."""
    return img.mode in _ALPHA_MODES or "transparency" in img.info


def to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Any decoded mode -> 8-bit RGB; transparency is composited on `background`."""
    if img.mode in _SIXTEEN_BIT:
        # 16-bit grayscale: scale 0..65535 to 0..255 (Pillow's convert("L") would clip instead).
        arr = np.asarray(img).astype(np.float32)
        img = Image.fromarray(np.clip(arr / 257.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img)
        img = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L")
    if has_alpha(img):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def decode_image(path: str | Path, *, max_pixels: int = 100_000_000, draft: tuple[int, int] | None = None
                 ) -> Image.Image:
    """Decode `path` upright (EXIF orientation applied) in its own mode, or raise BadImage.

    `draft` (displayed W, H) lets JPEG decode at 1/2, 1/4 or 1/8 scale when the image is much larger
    than needed: the result is still at least that big.
    """
    data = read_image_file(path, max_pixels)
    if not data:
        raise BadImage("empty")
    _check_riff(data)
    img = _open(io.BytesIO(data), max_pixels)
    orientation = _orientation(img, data)
    if draft is not None and img.format in ("JPEG", "MPO"):
        dw, dh = draft if orientation not in _TRANSPOSED else draft[::-1]
        img.draft("RGB", (dw, dh))
    try:
        img.load()
        return ImageOps.exif_transpose(img) if orientation != 1 else img
    except DECODE_ERRORS as exc:
        raise _decode_error(exc) from None


def load_rgb(path: str | Path, *, background: tuple[int, int, int] = (255, 255, 255),
             max_pixels: int = 100_000_000, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode `path` to an upright 8-bit RGB image (see `decode_image`), or raise BadImage."""
    img = decode_image(path, max_pixels=max_pixels, draft=draft)
    try:
        return to_rgb(img, background)
    except DECODE_ERRORS as exc:
        raise _decode_error(exc) from None
