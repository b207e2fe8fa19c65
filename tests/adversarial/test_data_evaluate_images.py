"""`evaluate`'s image folders (--train-images, --reference) get the training loader's image policy:
format allowlist (an EPS named .png never reaches Ghostscript), pixel limit (a bomb header is a skipped
file, not a DecompressionBombError traceback), regular files only, one-line reasons."""
from __future__ import annotations

import io
import logging
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.evaluate.evaluation import load_image_folder


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def bomb() -> bytes:
    """A PNG header claiming 40,000 x 40,000 pixels (CRC fixed): over Pillow's own hard limit."""
    data = png(8, 8)
    ihdr = bytearray(data[8:33])
    ihdr[8:16] = struct.pack(">II", 40_000, 40_000)
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])))
    return data[:8] + bytes(ihdr) + data[33:]


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "good.png").write_bytes(png(32, 32))
    (tmp_path / "eps.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n")
    (tmp_path / "bomb.png").write_bytes(bomb())
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.png")
    return tmp_path


def test_only_good_images_load_and_each_bad_one_is_named_with_its_reason(folder, caplog):
    with caplog.at_level(logging.WARNING):
        images = load_image_folder(folder, "--train-images")
    assert [im.size for im in images] == [(32, 32)] and images[0].mode == "RGB"
    lines = {r.getMessage().split(":")[0].rsplit("/", 1)[-1]: r.getMessage() for r in caplog.records}
    assert "not an image in a supported format" in lines["eps.png"]
    assert "too many pixels" in lines["bomb.png"]
    assert "not a regular file" in lines["zero.png"] and "not a regular file" in lines["fifo.png"]


def test_a_folder_of_bad_images_is_one_clear_error(folder):
    (folder / "good.png").unlink()
    with pytest.raises(SdloraError, match="--reference .*: no readable images") as info:
        load_image_folder(folder, "--reference")
    assert "\n" not in str(info.value)
