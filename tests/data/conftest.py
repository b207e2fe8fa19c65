"""Image factories for data tests: good files of every mode, and every kind of bad file.

Tests reach the factories through the `mk` fixture (works under any pytest import mode).
"""
from __future__ import annotations

from types import SimpleNamespace

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlora.config import DataConfig, SourceConfig


def noise(w: int, h: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels > 1 else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def save(path: Path, img: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def rgb(path: Path, w: int = 96, h: int = 64, seed: int = 0, **kw) -> Path:
    return save(path, Image.fromarray(noise(w, h, seed)), **kw)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def with_ihdr_size(png: bytes, w: int, h: int) -> bytes:
    """A PNG whose header claims another size (CRC fixed), as a decompression bomb does."""
    ihdr = bytearray(png[8:33])  # length(4) type(4) data(13) crc(4)
    ihdr[8:16] = struct.pack(">II", w, h)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return png[:8] + bytes(ihdr) + png[33:]


def corrupt_idat(png: bytes) -> bytes:
    """Flip bytes inside the IDAT chunk without fixing its CRC."""
    i = png.index(b"IDAT") + 10
    return png[:i] + bytes(b ^ 0xFF for b in png[i:i + 8]) + png[i + 8:]


def bad_zlib_png(png: bytes) -> bytes:
    """Flip bytes inside the IDAT chunk and fix its CRC: every chunk checks out, the pixels don't decode."""
    start = png.index(b"IDAT")
    length = struct.unpack(">I", png[start - 4:start])[0]
    data = bytearray(png[start + 4:start + 4 + length])
    data[2:10] = bytes(b ^ 0xFF for b in data[2:10])
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + bytes(data)))
    return png[:start + 4] + bytes(data) + crc + png[start + 8 + length:]


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_bad_files(folder: Path) -> dict[str, str]:
    """Every kind of bad file with an image extension -> the skip code it must get."""
    good_png = png_bytes(Image.fromarray(noise(64, 64, 1)))
    jpg = io.BytesIO()
    Image.fromarray(noise(64, 64, 2)).save(jpg, "JPEG", quality=90)
    webp = io.BytesIO()
    Image.fromarray(noise(64, 64, 3)).save(webp, "WEBP")
    bmp = io.BytesIO()
    Image.fromarray(noise(64, 64, 4)).save(bmp, "BMP")
    bad = {
        "empty.png": b"",
        "text.jpg": b"this is not an image at all\n" * 4,
        "random.webp": bytes(np.random.default_rng(5).integers(0, 256, 500, dtype=np.uint8)),
        "truncated.jpg": jpg.getvalue()[: len(jpg.getvalue()) // 2],
        "truncated.png": good_png[: len(good_png) // 2],
        "truncated.webp": webp.getvalue()[: len(webp.getvalue()) // 2],
        "truncated.bmp": bmp.getvalue()[: len(bmp.getvalue()) // 2],
        "crc.png": corrupt_idat(good_png),
        "bomb.png": with_ihdr_size(good_png, 40_000, 40_000),
    }
    codes = {"empty.png": "empty", "text.jpg": "not_image", "random.webp": "not_image", "truncated.jpg": "truncated",
             "truncated.png": "truncated", "truncated.webp": "truncated", "truncated.bmp": "truncated",
             "crc.png": "corrupt", "bomb.png": "too_large"}
    for name, data in bad.items():
        write(folder / name, data)
    return codes


def make_good_files(folder: Path) -> list[str]:
    """Good images of every kind the decoder must handle (all at least 64 px)."""
    a = noise(80, 64, 10)
    save(folder / "rgb.png", Image.fromarray(a))
    save(folder / "photo.jpg", Image.fromarray(a), quality=92)
    save(folder / "pic.jpeg", Image.fromarray(a))
    save(folder / "web.webp", Image.fromarray(a))
    save(folder / "old.bmp", Image.fromarray(a))
    rgba = np.dstack([a, np.full((64, 80), 128, np.uint8)])
    save(folder / "alpha.png", Image.fromarray(rgba, "RGBA"))
    save(folder / "gray.png", Image.fromarray(a[..., 0], "L"))
    save(folder / "cmyk.jpg", Image.fromarray(a).convert("CMYK"))
    save(folder / "deep.png", Image.fromarray(a[..., 0].astype(np.uint16) * 257))
    save(folder / "palette.png", Image.fromarray(a).convert("P"), transparency=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    save(folder / "rotated.jpg", Image.fromarray(a), exif=exif.tobytes())
    return ["rgb.png", "photo.jpg", "pic.jpeg", "web.webp", "old.bmp", "alpha.png", "gray.png", "cmyk.jpg",
            "deep.png", "palette.png", "rotated.jpg"]


def small_cfg(*paths, **kw) -> DataConfig:
    """A DataConfig at 64 px with 16 px steps: buckets 32..128 px, fast to decode."""
    sources = [p if isinstance(p, SourceConfig) else SourceConfig(path=str(p)) for p in paths]
    defaults = dict(resolution=64, bucket_step=16, min_bucket_side=32, max_bucket_side=128, num_workers=0)
    defaults.update(kw)
    return DataConfig(sources=sources, **defaults)


@pytest.fixture(scope="session")
def mk() -> SimpleNamespace:
    return SimpleNamespace(noise=noise, save=save, rgb=rgb, png_bytes=png_bytes, with_ihdr_size=with_ihdr_size,
                           corrupt_idat=corrupt_idat, bad_zlib_png=bad_zlib_png, write=write, make_bad_files=make_bad_files,
                           make_good_files=make_good_files, small_cfg=small_cfg)


@pytest.fixture(scope="session")
def tokenizer():
    from sdlora.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> tuple[Path, list[str], dict[str, str]]:
    """A folder of good images of every kind plus every kind of bad file, with captions for some."""
    folder = tmp_path_factory.mktemp("mixed")
    good = make_good_files(folder)
    codes = make_bad_files(folder / "junk")
    (folder / "rgb.txt").write_text("1girl, blue hair, smile")
    (folder / "photo.txt").write_text("1girl, red hair")
    return folder, good, {f"junk/{k}": v for k, v in codes.items()}
