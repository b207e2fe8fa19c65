import numpy as np
import pytest

from sdlora.errors import SdloraError
from sdlora.tiny.world import (ALL_SHAPE_NAMES, COLOURS, EDGE_MARGIN, IMAGE_SIZE, NEW_SHAPES, SHAPE_NAMES, SIZES,
                               STYLES, Scene,
                               caption, sample_scene, scene_for_seed)


@pytest.mark.parametrize("args, expected", [
    (("triangle", "red", "small", "blue"), "a small red triangle on a blue background"),
    (("star", "orange", None, None), "an orange star"),
    (("circle", "orange", "large", None), "a large orange circle"),
    (("cross", "white", None, "orange"), "a white cross on an orange background"),
    (("square", "black", "medium", "yellow"), "a medium black square on a yellow background"),
])
def test_caption_table(args, expected):
    assert caption(*args) == expected


def test_world_has_the_required_variety():
    assert {"circle", "square", "triangle"} <= set(SHAPE_NAMES) and len(SHAPE_NAMES) >= 5
    assert 6 <= len(COLOURS) <= 8 and len(SIZES) == 3
    assert STYLES[0] == "plain" and "striped" in STYLES and "hollow" in STYLES
    assert len(NEW_SHAPES) >= 3 and not set(NEW_SHAPES) & set(SHAPE_NAMES)
    assert ALL_SHAPE_NAMES == SHAPE_NAMES + tuple(NEW_SHAPES)


def test_default_stream_keeps_to_the_five_pretraining_shapes_and_new_shapes_are_opt_in():
    scenes = [scene_for_seed(11, i) for i in range(200)]
    assert {s.shape for s in scenes} == set(SHAPE_NAMES)
    new = [scene_for_seed(11, i, "plain", tuple(NEW_SHAPES)) for i in range(60)]
    assert {s.shape for s in new} == set(NEW_SHAPES)
    # the same draws otherwise: only the shape differs
    assert [(s.colour, s.cx) for s in new] == [(s.colour, s.cx) for s in scenes[:60]]
    with pytest.raises(SdloraError, match="unicorn"):
        scene_for_seed(11, 0, "plain", ("unicorn",))


def test_scene_caption_names_its_attributes_and_variants_drop_them():
    scene = Scene("star", "green", "purple", "large", 30.0, 30.0, 21.0)
    assert scene.caption() == "a large green star on a purple background"
    assert scene.caption(size=False, background=False) == "a green star"
    assert "striped" not in Scene("star", "green", "purple", "large", 30, 30, 21, "striped").caption()


def test_sampled_scenes_are_valid_and_cover_the_world():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(600)]
    for s in scenes:
        assert s.background != s.colour
        assert abs(s.radius - SIZES[s.size]) <= 1.0
        for c in (s.cx, s.cy):
            assert s.radius + EDGE_MARGIN <= c <= IMAGE_SIZE - s.radius - EDGE_MARGIN
    assert {s.shape for s in scenes} == set(SHAPE_NAMES)
    assert {s.colour for s in scenes} == set(COLOURS) == {s.background for s in scenes}
    assert {s.size for s in scenes} == set(SIZES)


def test_scene_for_seed_is_deterministic_and_indices_independent():
    assert scene_for_seed(3, 7) == scene_for_seed(3, 7)
    assert scene_for_seed(3, 7) != scene_for_seed(3, 8) != scene_for_seed(4, 7)
    assert scene_for_seed(3, 7, "striped").style == "striped"


def test_unknown_style_is_a_user_error():
    with pytest.raises(SdloraError, match="style"):
        scene_for_seed(0, 0, "dotted")
