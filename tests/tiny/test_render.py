import numpy as np
import pytest

from sdlora.tiny.render import inset, render, render_image, render_seed, shape_alpha, stripe_alpha
from sdlora.tiny.world import HOLLOW_WIDTH, OUTLINES, PALETTE, STRIPE_PERIOD, Scene


def test_same_seed_same_pixels_different_seed_different_pixels():
    a, scene_a = render_seed(5, 11)
    b, scene_b = render_seed(5, 11)
    assert scene_a == scene_b and np.array_equal(a, b)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    for other in (render_seed(6, 11)[0], render_seed(5, 12)[0]):
        assert not np.array_equal(a, other)


def test_pixels_agree_with_the_scene():
    scene = Scene("square", "red", "blue", "large", 32.0, 32.0, 21.0)
    pixels = render(scene)
    assert tuple(pixels[32, 32]) == PALETTE["red"]
    assert tuple(pixels[1, 1]) == PALETTE["blue"] == tuple(pixels[62, 62])
    # Only the two colours and their blends along the anti-aliased edge.
    red, blue = np.asarray(PALETTE["red"], float), np.asarray(PALETTE["blue"], float)
    t = ((pixels - blue) @ (red - blue)) / ((red - blue) @ (red - blue))
    assert np.abs(blue + t[..., None] * (red - blue) - pixels).max() <= 1.0


@pytest.mark.parametrize("shape, area", [("circle", np.pi * 0.92 ** 2), ("square", 1.7 ** 2),
                                         ("triangle", 0.5 * 1.94 * 1.78)])
def test_shape_coverage_has_the_outline_area(shape, area):
    alpha = shape_alpha(shape, 32.0, 32.0, 20.0)
    assert alpha.sum() == pytest.approx(area * 400, rel=0.02)


def test_every_shape_is_distinct_and_centred():
    masks = {name: shape_alpha(name, 32.0, 32.0, 20.0) > 0.5 for name in OUTLINES}
    for name, mask in masks.items():
        assert mask[32, 32] or name == "crescent", name  # a crescent's middle is its bite
        for other, m in masks.items():
            if other != name:
                assert (mask ^ m).sum() > 100, (name, other)


def test_striped_style_keeps_an_outline_and_shows_both_colours_inside():
    plain = Scene("circle", "yellow", "black", "large", 32.0, 32.0, 21.0)
    striped = Scene(**{**plain.__dict__, "style": "striped"})
    p, s = render(plain), render(striped)
    assert not np.array_equal(p, s)
    alpha = shape_alpha("circle", 32.0, 32.0, 21.0)
    interior = inset(alpha, 2) > 0.99
    yellow = (s == PALETTE["yellow"]).all(-1)
    black = (s == PALETTE["black"]).all(-1)
    assert 0.3 < yellow[interior].mean() < 0.7 and black[interior].mean() > 0.2
    ring = (alpha > 0.99) & (inset(alpha, 1) < 0.5)  # the 1 px outline
    to_yellow = np.linalg.norm(s - np.asarray(PALETTE["yellow"]), axis=-1)
    to_black = np.linalg.norm(s - np.asarray(PALETTE["black"]), axis=-1)
    assert ring.sum() > 80 and (to_yellow < to_black)[ring].all()


def test_stripes_are_periodic_along_the_diagonal():
    stripes = stripe_alpha()
    assert np.allclose(stripes, np.roll(stripes, STRIPE_PERIOD, axis=1))
    assert np.allclose(stripes, np.roll(np.roll(stripes, 1, axis=0), -1, axis=1))
    assert stripes.mean() == pytest.approx(0.5, abs=0.01)


def test_render_image_is_rgb_pil():
    image = render_image(Scene("cross", "green", "white", "medium", 30.0, 30.0, 15.0))
    assert image.mode == "RGB" and image.size == (64, 64)


@pytest.mark.parametrize("shape", ["square", "circle"])
def test_hollow_style_is_an_outline_around_the_background(shape):
    scene = Scene(shape, "red", "white", "large", 32.0, 32.0, 21.0, "hollow")
    pixels = render(scene)
    alpha = shape_alpha(shape, 32.0, 32.0, 21.0)
    red = (pixels == PALETTE["red"]).all(-1)
    white = (pixels == PALETTE["white"]).all(-1)
    interior = inset(alpha, HOLLOW_WIDTH + 1) > 0.99
    band = (alpha > 0.99) & (inset(alpha, HOLLOW_WIDTH - 1) < 0.01)  # well inside the outline band
    assert interior.sum() > 300 and white[interior].all()
    assert band.sum() > 20 and red[band].all()
