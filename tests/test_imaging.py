import numpy as np
import pytest
from PIL import Image, ImageDraw

from sdlora.imaging import (contact_sheet, font, labelled_grid, text_block, to_array, to_image, to_uint8, upscale_factor,
                            wrap)


def solid(color, size=(100, 30)):
    return Image.new("RGB", size, color)


COLORS = [[(255, 0, 0), (0, 255, 0), (0, 0, 255)], [(255, 255, 0), (0, 255, 255), (255, 0, 255)]]


def test_grid_places_each_cell_and_draws_labels():
    cells = [[solid(c) for c in row] for row in COLORS]
    grid = labelled_grid(cells, ["row one", "row two"], ["base", "lora @ 0.5", "lora @ 1"], min_cell=1)
    array = np.asarray(grid)
    label_w, header_h = grid.width - 3 * 100, grid.height - 2 * 30
    assert label_w == 160 and header_h > 0
    for r, row in enumerate(COLORS):
        for c, color in enumerate(row):
            y, x = header_h + r * 30 + 15, label_w + c * 100 + 50
            assert tuple(array[y, x]) == color
    assert (array[:header_h, label_w:] < 128).any()  # column labels drawn
    assert (array[header_h:, :label_w] < 128).any()  # row labels drawn


def test_grid_centres_smaller_cells():
    grid = labelled_grid([[solid((0, 0, 0), (100, 30)), solid((0, 0, 0), (20, 10))]], ["r"], ["a", "b"], min_cell=1)
    array = np.asarray(grid)
    header_h, label_w = grid.height - 30, grid.width - 200
    cell = array[header_h:, label_w + 100:]
    dark = np.argwhere(cell.sum(axis=2) == 0)
    assert dark.min(axis=0).tolist() == [10, 40] and dark.max(axis=0).tolist() == [19, 59]


def test_small_cells_get_columns_wide_enough_for_labels():
    grid = labelled_grid([[solid((0, 0, 0), (32, 32))] * 3], ["r"], ["a", "b", "c"], min_cell=1)
    assert grid.width == 160 + 3 * 96


def test_grid_needs_one_label_per_row_and_column():
    with pytest.raises(ValueError):
        labelled_grid([[solid((0, 0, 0))]], ["a", "b"], ["c"])


def test_contact_sheet_layout():
    images = [solid((i * 30, 0, 0), (32, 32)) for i in range(5)]
    sheet = contact_sheet(images, [f"seed {i}" for i in range(5)], min_cell=1)
    assert sheet.width == 3 * 96  # ceil(sqrt(5)) columns, cells at least 96 px wide
    two = contact_sheet(images, ["x"] * 5, columns=2, min_cell=1)
    assert two.width == 2 * 96 and two.height > sheet.height


def test_wrap_fits_the_width():
    fnt = font(14)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text = "a photograph of an astronaut riding a horse " + "x" * 80
    lines = wrap(text, 100, fnt)
    assert len(lines) > 2 and all(draw.textlength(line, font=fnt) <= 100 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")
    assert text_block("one\ntwo\nthree\nfour", 100, fnt, max_lines=2).height < text_block("one\ntwo", 100, fnt, 6).height + 1


def test_small_images_are_scaled_up_by_a_whole_factor():
    cell = Image.fromarray(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3))
    assert upscale_factor([cell]) == 4 and upscale_factor([Image.new("RGB", (512, 512))]) == 1
    grid = labelled_grid([[cell, cell]], ["r"], ["a", "b"])
    label_w, header_h = grid.width - 2 * 256, grid.height - 256
    block = np.asarray(grid)[header_h:header_h + 256, label_w:label_w + 256]
    assert np.array_equal(block, np.asarray(cell).repeat(4, axis=0).repeat(4, axis=1))  # nearest neighbour
    sheet = contact_sheet([cell], ["seed 1"])
    assert sheet.width == 256 and sheet.height > 256


def test_array_image_round_trip():
    array = np.random.default_rng(0).random((8, 6, 3)).astype(np.float32)
    image = to_image(array)
    assert image.size == (6, 8) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), to_uint8(array))
    assert np.abs(to_array(image) - array).max() <= 0.5 / 255 + 1e-6
    assert to_image(to_array(image)).tobytes() == image.tobytes()
    assert to_uint8(np.array([[[-1.0, 0.5, 2.0]]])).tolist() == [[[0, 128, 255]]]
