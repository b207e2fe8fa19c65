"""Images for every floor that writes them (train, generate, evaluate): float arrays to 8-bit
images, and labelled grids (Pillow only): the comparison grid (rows x columns with text labels) and
the contact sheet (every image with a caption under it).

Cells of different sizes are centred in a cell as large as the largest image; small images are
scaled up by a whole factor with nearest-neighbour sampling (64 px samples are not specks, and
every pixel stays a visible block); text is wrapped to the space it has, so long prompts never run
across neighbouring cells.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
PAD = 6
MIN_CELL = 256  # grids scale smaller images up to at least this many pixels on their long side


def to_uint8(array: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] -> uint8, rounded as diffusers' numpy_to_pil does."""
    return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)


def to_image(array: np.ndarray) -> Image.Image:
    """(H, W, 3) float in [0, 1] -> an 8-bit RGB image (see to_uint8)."""
    return Image.fromarray(to_uint8(array), "RGB")


def to_array(image: Image.Image) -> np.ndarray:
    """An image -> (H, W, 3) float32 in [0, 1]; to_image(to_array(im)) gives `im` back exactly."""
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def upscale_factor(images: list[Image.Image], min_cell: int = MIN_CELL) -> int:
    """The whole factor that brings the largest image's long side to at least `min_cell` px (1 if it is)."""
    side = max(max(im.size) for im in images)
    return max(1, math.ceil(min_cell / side))


def upscale(images: list[Image.Image], factor: int) -> list[Image.Image]:
    """Each image `factor` times larger, nearest neighbour (pixels become exact blocks)."""
    if factor == 1:
        return list(images)
    return [im.resize((im.width * factor, im.height * factor), Image.Resampling.NEAREST) for im in images]


def font(size: int = 14) -> ImageFont.ImageFont:
    """Pillow's bundled font at `size` px (a scalable font since Pillow 10.1, else the bitmap one)."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - Pillow < 10.1
        return ImageFont.load_default()


def wrap(text: str, width: int, fnt: ImageFont.ImageFont) -> list[str]:
    """Greedy word wrap of `text` to `width` px; words longer than a line are cut."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if draw.textlength(candidate, font=fnt) <= width or not line:
                line = candidate
            else:
                lines.append(line)
                line = word
            while draw.textlength(line, font=fnt) > width and len(line) > 1:
                cut = max(1, int(len(line) * width / draw.textlength(line, font=fnt)))
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def text_block(text: str, width: int, fnt: ImageFont.ImageFont, max_lines: int = 6) -> Image.Image:
    """`text` wrapped to `width`, at most `max_lines` lines (the last one ending in an ellipsis)."""
    lines = wrap(text, width - 2 * PAD, fnt)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [lines[max_lines - 1][:-1] + "…"]
    line_h = _line_height(fnt)
    block = Image.new("RGB", (width, len(lines) * line_h + 2 * PAD), BACKGROUND)
    draw = ImageDraw.Draw(block)
    for i, line in enumerate(lines):
        draw.text((PAD, PAD + i * line_h), line, fill=INK, font=fnt)
    return block


def _line_height(fnt: ImageFont.ImageFont) -> int:
    left, top, right, bottom = fnt.getbbox("Ag|")
    return int(bottom - min(top, 0)) + 3


def _cell_size(images: list[Image.Image]) -> tuple[int, int]:
    return max(im.width for im in images), max(im.height for im in images)


def _paste_centred(canvas: Image.Image, image: Image.Image, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    canvas.paste(image.convert("RGB"), (x0 + (x1 - x0 - image.width) // 2, y0 + (y1 - y0 - image.height) // 2))


def labelled_grid(cells: list[list[Image.Image]], row_labels: list[str], col_labels: list[str],
                  font_size: int | None = None, min_cell: int = MIN_CELL) -> Image.Image:
    """`cells[r][c]` laid out in a grid, `col_labels` above the columns, `row_labels` left of the rows.

    Images smaller than `min_cell` are scaled up (see upscale_factor). Text scales with the cells
    (about 21 px on 512 px images); columns are at least 96 px wide so labels stay readable.
    """
    if len(cells) != len(row_labels) or any(len(row) != len(col_labels) for row in cells):
        raise ValueError("labelled_grid: need one label per row and per column")
    factor = upscale_factor([im for row in cells for im in row], min_cell)
    cells = [upscale(row, factor) for row in cells]
    iw, ch = _cell_size([im for row in cells for im in row])
    fnt = font(font_size or max(12, iw // 24))
    cw, label_w = max(iw, 96), max(160, iw // 2)
    headers = [text_block(label, cw, fnt) for label in col_labels]
    header_h = max(block.height for block in headers)
    sides = [text_block(label, label_w, fnt, max_lines=max(2, ch // _line_height(fnt))) for label in row_labels]
    canvas = Image.new("RGB", (label_w + len(col_labels) * cw, header_h + len(cells) * ch), BACKGROUND)
    for c, block in enumerate(headers):
        canvas.paste(block, (label_w + c * cw, header_h - block.height))
    for r, row in enumerate(cells):
        y = header_h + r * ch
        canvas.paste(sides[r], (0, y + max(0, (ch - sides[r].height) // 2)))
        for c, image in enumerate(row):
            _paste_centred(canvas, image, (label_w + c * cw, y, label_w + (c + 1) * cw, y + ch))
    return canvas


def contact_sheet(images: list[Image.Image], captions: list[str], columns: int | None = None,
                  font_size: int = 12, min_cell: int = MIN_CELL) -> Image.Image:
    """Every image with its caption below, `columns` per row (default: a near-square sheet); images
    smaller than `min_cell` are scaled up as in labelled_grid."""
    if not images or len(images) != len(captions):
        raise ValueError("contact_sheet: need at least one image and one caption per image")
    images = upscale(images, upscale_factor(images, min_cell))
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    fnt = font(font_size)
    cw, ch = _cell_size(images)
    cw = max(cw, 96)
    blocks = [text_block(caption, cw, fnt, max_lines=3) for caption in captions]
    caption_h = max(block.height for block in blocks)
    canvas = Image.new("RGB", (columns * cw, rows * (ch + caption_h)), BACKGROUND)
    for i, (image, block) in enumerate(zip(images, blocks)):
        x, y = (i % columns) * cw, (i // columns) * (ch + caption_h)
        _paste_centred(canvas, image, (x, y, x + cw, y + ch))
        canvas.paste(block, (x, y + ch))
    return canvas
