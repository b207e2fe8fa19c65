import numpy as np
import pytest
from PIL import Image

from sdlora.data.images import IMAGE_EXTENSIONS, BadImage, load_rgb, parse_background, probe_image, to_rgb
from sdlora.errors import SdloraError


@pytest.fixture(scope="module")
def bad(tmp_path_factory, mk):
    folder = tmp_path_factory.mktemp("bad")
    return folder, mk.make_bad_files(folder)


@pytest.mark.parametrize("name", ["empty.png", "text.jpg", "random.webp", "truncated.jpg", "truncated.png",
                                  "truncated.webp", "truncated.bmp", "crc.png", "bomb.png"])
def test_probe_names_the_right_reason(bad, name):
    folder, codes = bad
    with pytest.raises(BadImage) as info:
        probe_image((folder / name).read_bytes(), max_pixels=100_000_000)
    assert info.value.code == codes[name]


@pytest.mark.parametrize("name", ["empty.png", "text.jpg", "truncated.jpg", "truncated.png", "crc.png", "bomb.png"])
def test_load_rejects_bad_files_with_bad_image(bad, name):
    folder, _ = bad
    with pytest.raises(BadImage):
        load_rgb(folder / name)


def test_our_pixel_limit_applies_below_pillows(mk):
    data = mk.png_bytes(Image.fromarray(mk.noise(64, 64)))
    assert probe_image(data, max_pixels=64 * 64).width == 64
    with pytest.raises(BadImage) as info:
        probe_image(data, max_pixels=64 * 64 - 1)
    assert info.value.code == "too_large" and "4,096" in info.value.reason


def test_bomb_header_is_rejected_without_decoding(mk):
    data = mk.with_ihdr_size(mk.png_bytes(Image.fromarray(mk.noise(8, 8))), 12_000, 12_000)  # 144 Mpx < Pillow's hard limit
    with pytest.raises(BadImage) as info:
        probe_image(data, max_pixels=100_000_000)
    assert info.value.code == "too_large"


def test_jpeg_with_trailing_bytes_after_end_marker_is_kept(tmp_path, mk):
    path = mk.save(tmp_path / "a.jpg", Image.fromarray(mk.noise(64, 48)), quality=90)
    data = path.read_bytes() + b"\x00" * 5000  # some cameras pad files: not truncation
    assert probe_image(data, max_pixels=10**8).width == 64


@pytest.mark.parametrize("mode, fill, expected", [
    ("RGBA", (10, 20, 30, 0), (255, 0, 0)),          # fully transparent -> background
    ("RGBA", (10, 20, 30, 255), (10, 20, 30)),       # opaque -> itself
    ("LA", (100, 0), (255, 0, 0)),
    ("L", 77, (77, 77, 77)),
    ("CMYK", (255, 0, 0, 0), (0, 255, 255)),         # pure cyan
    ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ("I;16", 65535, (255, 255, 255)),                # 16-bit white is scaled, not clipped
    ("I;16", 32896, (128, 128, 128)),
    ("I", 257 * 40, (40, 40, 40)),
    ("1", 1, (255, 255, 255)),
])
def test_to_rgb_table(mode, fill, expected):
    out = to_rgb(Image.new(mode, (4, 3), fill), background=(255, 0, 0))
    assert out.mode == "RGB" and out.size == (4, 3)
    assert out.getpixel((1, 1)) == expected


def test_palette_transparency_is_composited(tmp_path, mk):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 255, 0] * 2 + [0] * 762)
    img.putpixel((1, 1), 1)
    path = mk.save(tmp_path / "p.png", img, transparency=0)
    out = load_rgb(path, background=(9, 9, 9))
    assert out.getpixel((0, 0)) == (9, 9, 9) and out.getpixel((1, 1)) == (0, 255, 0)


def test_exif_orientation_is_applied_to_size_and_pixels(tmp_path, mk):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    path = mk.save(tmp_path / "r.jpg", Image.fromarray(arr), exif=exif.tobytes(), quality=95)
    info = probe_image(path.read_bytes(), 10**8)
    assert (info.width, info.height) == (20, 40)
    out = np.asarray(load_rgb(path))
    assert out.shape == (40, 20, 3)
    assert out[:15].mean() > 200 and out[25:].mean() < 50  # white half is now on top


def test_jpeg_draft_decodes_smaller_but_not_below_request(tmp_path, mk):
    path = mk.save(tmp_path / "big.jpg", Image.fromarray(mk.noise(800, 600)), quality=80)
    img = load_rgb(path, draft=(100, 75))
    assert 100 <= img.size[0] < 800 and 75 <= img.size[1] < 600


def test_parse_background():
    assert parse_background("white") == (255, 255, 255)
    assert parse_background("#102030") == (16, 32, 48)
    with pytest.raises(SdloraError, match="data.background"):
        parse_background("not-a-colour")


def test_extensions_cover_the_issue_list():
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp"} <= IMAGE_EXTENSIONS


@pytest.mark.skipif(".avif" not in IMAGE_EXTENSIONS, reason="this Pillow has no AVIF support")
def test_avif_decodes(tmp_path, mk):
    path = mk.save(tmp_path / "a.avif", Image.fromarray(mk.noise(64, 48)))
    assert probe_image(path.read_bytes(), 10**8).width == 64
    assert load_rgb(path).size == (64, 48)


def test_probe_decodes_every_pixel_so_the_scan_agrees_with_training(mk):
    """A PNG whose chunks all check out but whose pixel data does not inflate: the scan must refuse it
    (it used to pass the scan, then fail in training)."""
    data = mk.bad_zlib_png(mk.png_bytes(Image.fromarray(mk.noise(64, 64, 1))))
    with pytest.raises(BadImage) as info:
        probe_image(data, max_pixels=10**8)
    assert info.value.code == "corrupt"


def test_load_reads_only_regular_files(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.png")
    with pytest.raises(BadImage) as info:
        load_rgb(tmp_path / "fifo.png")  # would block forever if it were opened for reading
    assert info.value.code == "not_regular"
