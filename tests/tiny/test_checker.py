import numpy as np
import pytest
from PIL import Image, ImageFilter

from sdlora.errors import SdloraError
from sdlora.tiny.checker import HOLLOW_BELOW, STRIPED_BELOW, Reading, check
from sdlora.tiny.render import render, render_seed
from sdlora.tiny.world import ALL_SHAPE_NAMES, NEW_SHAPES, PALETTE, SHAPE_NAMES, Scene, scene_for_seed

FIELDS = ("colour", "background", "shape", "style")
N = 100  # images per style and condition


def degrade(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild blur and noise, like a diffusion model's decoded output."""
    blurred = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(0.8)), np.float32)
    return np.clip(blurred + rng.normal(0.0, 8.0, pixels.shape), 0, 255).astype(np.uint8)


def ground_truth(style: str, shapes=SHAPE_NAMES, sizes=("small", "medium", "large")) -> list[Scene]:
    """The first N scenes of stream 2024 in `style` with one of `sizes`, shapes drawn from `shapes`."""
    scenes, i = [], 0
    while len(scenes) < N:
        scene = scene_for_seed(2024, i, style, shapes)
        scenes.append(scene) if scene.size in sizes else None
        i += 1
    return scenes


def accuracy(style: str, degraded: bool, shapes=SHAPE_NAMES, sizes=("small", "medium", "large")) -> dict[str, float]:
    rng = np.random.default_rng(1)
    hits = dict.fromkeys(FIELDS, 0)
    for scene in ground_truth(style, shapes, sizes):
        pixels = render(scene)
        reading = check(degrade(pixels, rng) if degraded else pixels)
        for f in FIELDS:
            hits[f] += getattr(reading, f) == getattr(scene, f)
    return {f: h / N for f, h in hits.items()}


@pytest.mark.parametrize("degraded", [False, True], ids=["clean", "blur+noise"])
@pytest.mark.parametrize("style", ["plain", "striped"])
def test_checker_reads_ground_truth_at_least_95_percent(style, degraded):
    rates = accuracy(style, degraded)
    assert min(rates.values()) >= 0.95, rates


def test_style_threshold_sits_midway_between_the_classes_on_degraded_ground_truth():
    """STRIPED_BELOW is calibrated, not tuned: the middle of the gap between the plain and striped
    fills of blurred + noisy rendered images (the widest margin to both classes)."""
    rng = np.random.default_rng(1)
    fills = {style: [check(degrade(render_seed(2024, i, style)[0], rng)).fill for i in range(N)]
             for style in ("plain", "striped")}
    striped_max, plain_min = max(fills["striped"]), min(fills["plain"])
    assert plain_min - striped_max > 0.2, (striped_max, plain_min)  # the classes are well apart
    assert abs(STRIPED_BELOW - (striped_max + plain_min) / 2) < 0.02, (striped_max, plain_min)


def test_new_shapes_are_read_among_all_eight_at_least_95_percent():
    """Blurred + noisy scenes drawn from all eight shapes (new ones included), plain and striped."""
    for style in ("plain", "striped"):
        rates = accuracy(style, True, ALL_SHAPE_NAMES)
        assert min(rates.values()) >= 0.95, (style, rates)


@pytest.fixture(scope="module")
def medium_large_readings() -> dict[str, list[tuple[Scene, Reading]]]:
    """Blurred + noisy medium and large scenes of all eight shapes, hollow and striped, with readings."""
    rng = np.random.default_rng(1)
    return {style: [(scene, check(degrade(render(scene), rng)))
                    for scene in ground_truth(style, ALL_SHAPE_NAMES, ("medium", "large"))]
            for style in ("hollow", "striped")}


def test_without_hollow_the_style_is_plain_or_striped_and_the_rest_unchanged():
    """hollow=False (every measurement whose expected style is not hollow) never reads `hollow`, and reads
    colour, shape and the striped/plain style of non-hollow images as the full checker does."""
    rng = np.random.default_rng(2)
    for style in ("hollow", "striped", "plain"):
        for scene in ground_truth(style, ALL_SHAPE_NAMES, ("medium", "large"))[:12]:
            image = degrade(render(scene), rng)
            full, narrow = check(image), check(image, hollow=False)
            assert narrow.style in ("plain", "striped")
            if full.style != "hollow":
                assert narrow == full


def test_hollow_style_is_read_at_least_95_percent_on_medium_and_large_shapes(medium_large_readings):
    pairs = medium_large_readings["hollow"]
    rates = {f: np.mean([getattr(r, f) == getattr(s, f) for s, r in pairs]) for f in FIELDS}
    assert min(rates.values()) >= 0.95, rates


def test_hollow_threshold_sits_midway_between_hollow_and_striped_shapes_on_degraded_ground_truth(
        medium_large_readings):
    """HOLLOW_BELOW is calibrated like STRIPED_BELOW: the middle of the gap between the closed-up
    foreground share of hollow and of striped shapes (plain ones are solid throughout, ~1.0)."""
    solid = {style: [r.solid for _, r in pairs] for style, pairs in medium_large_readings.items()}
    hollow_max, striped_min = max(solid["hollow"]), min(solid["striped"])
    assert striped_min - hollow_max > 0.1, (hollow_max, striped_min)
    assert abs(HOLLOW_BELOW - (hollow_max + striped_min) / 2) < 0.02, (hollow_max, striped_min)


@pytest.mark.parametrize("shape", NEW_SHAPES)
def test_each_new_shape_is_recognised_in_every_style(shape):
    for size, r in (("small", 10.0), ("medium", 15.0), ("large", 21.0)):
        for style in ("plain", "striped", "hollow"):
            if style == "hollow" and size == "small":
                continue
            reading = check(render(Scene(shape, "purple", "yellow", size, 31.0, 33.0, r, style)))
            assert (reading.shape, reading.style, reading.colour) == (shape, style, "purple"), (size, style)


@pytest.mark.parametrize("shape", SHAPE_NAMES)
def test_each_shape_is_recognised_at_every_size(shape):
    for size, r in (("small", 10.0), ("medium", 15.0), ("large", 21.0)):
        for style in ("plain", "striped"):
            reading = check(render(Scene(shape, "purple", "yellow", size, 31.0, 33.0, r, style)))
            assert (reading.shape, reading.style, reading.colour) == (shape, style, "purple"), (size, style)


def test_blank_image_has_no_shape():
    blank = np.zeros((64, 64, 3), np.uint8) + np.asarray(PALETTE["green"], np.uint8)
    assert check(blank) == Reading(None, "green", None, None)


def test_accepts_pil_float_arrays_and_other_sizes():
    pixels = render(Scene("triangle", "white", "blue", "large", 32.0, 32.0, 21.0))
    expected = check(pixels)
    assert (expected.shape, expected.colour, expected.background) == ("triangle", "white", "blue")
    assert check(Image.fromarray(pixels)) == expected
    assert check(pixels.astype(np.float32) / 255.0) == expected
    big = check(Image.fromarray(pixels).resize((256, 256), Image.NEAREST))
    assert (big.shape, big.colour, big.background, big.style) == ("triangle", "white", "blue", "plain")


def test_checker_is_deterministic():
    pixels, _ = render_seed(0, 3, "striped")
    assert check(pixels) == check(pixels.copy())


def test_non_rgb_array_is_a_user_error():
    with pytest.raises(SdloraError, match="HxWx3"):
        check(np.zeros((64, 64), np.uint8))


def test_a_stray_blob_does_not_change_the_reading():
    pixels = render(Scene("triangle", "orange", "blue", "medium", 40.0, 40.0, 15.0))
    pixels[4:8, 4:9] = PALETTE["white"]  # a speckle a generator might leave behind
    reading = check(pixels)
    assert (reading.colour, reading.background, reading.shape, reading.style) == \
        ("orange", "blue", "triangle", "plain")
