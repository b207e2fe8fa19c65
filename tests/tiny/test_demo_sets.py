import numpy as np
import pytest
from PIL import Image, ImageFilter

from sdlora.errors import SdloraError
from sdlora.tiny.checker import check
from sdlora.tiny.demo_sets import (CLASS_WORD, CONCEPT_COLOURS, CONCEPT_SHAPE, CONCEPT_SIZES, MASK_BACKGROUND,
                                   MASK_GROW, REPLAY_SHARE, SUBJECT_COLOURS, SUBJECT_SHAPE, SUBJECT_TOKEN, held_out,
                                   new_shape_scenes, write_concept_dataset, write_subject_dataset)
from sdlora.tiny.world import COLOURS, NEW_SHAPES, PALETTE


def test_subject_set_is_one_new_shape_in_its_colours_captioned_with_token_and_class(tmp_path):
    scenes = write_subject_dataset(tmp_path)
    pngs, txts = sorted(tmp_path.glob("*.png")), sorted(tmp_path.glob("*.txt"))
    assert len(scenes) == len(pngs) == len(txts) == 8 and SUBJECT_SHAPE in NEW_SHAPES
    assert {s.shape for s in scenes} == {SUBJECT_SHAPE} and {s.colour for s in scenes} == set(SUBJECT_COLOURS)
    assert [s.colour for s in scenes] == [SUBJECT_COLOURS[i % len(SUBJECT_COLOURS)] for i in range(8)]  # in turn
    assert len(set(scenes)) == 8  # eight different scenes
    for scene, png, txt in zip(scenes, pngs, txts):
        caption = txt.read_text(encoding="utf-8").strip()
        assert f"{scene.colour} {SUBJECT_TOKEN} {CLASS_WORD}" in caption and SUBJECT_SHAPE not in caption
        reading = check(Image.open(png))
        assert (reading.shape, reading.colour, reading.style) == (SUBJECT_SHAPE, scene.colour, "plain"), png.name


def test_concept_set_names_its_shape_and_holds_out_some_colours(tmp_path):
    write_concept_dataset(tmp_path, 20, replay_colours=COLOURS)  # replay in every colour, if asked
    assert {check(Image.open(p)).colour for p in tmp_path.glob("replay-*.png")} - set(CONCEPT_COLOURS)
    scenes = write_concept_dataset(tmp_path, 20)  # by default no image at all in a held-out colour
    replay = sorted(tmp_path.glob("replay-*.txt"))
    assert len(replay) == round(REPLAY_SHARE * 20) == 10 and all(CONCEPT_SHAPE not in p.read_text() for p in replay)
    assert {check(Image.open(p.with_suffix(".png"))).colour for p in replay} <= set(CONCEPT_COLOURS)
    assert {s.shape for s in scenes} == {CONCEPT_SHAPE} and {s.colour for s in scenes} == set(CONCEPT_COLOURS)
    assert {s.size for s in scenes} == set(CONCEPT_SIZES) == {"medium", "large"}
    assert held_out(CONCEPT_COLOURS) and set(held_out(CONCEPT_COLOURS)) == set(COLOURS) - set(CONCEPT_COLOURS)
    captions = [p.read_text(encoding="utf-8") for p in sorted(tmp_path.glob("concept-*.txt"))]
    assert all(f"{s.colour} {CONCEPT_SHAPE}" in c for s, c in zip(scenes, captions))
    assert sum(check(Image.open(p)).shape == CONCEPT_SHAPE for p in sorted(tmp_path.glob("concept-*.png"))) >= 19


def test_sets_are_deterministic_and_a_rerun_replaces_its_files(tmp_path):
    a = write_concept_dataset(tmp_path, 12)
    first = (tmp_path / "concept-005.png").read_bytes()
    assert write_concept_dataset(tmp_path, 6) == a[:6]
    assert len(list(tmp_path.glob("concept-*.png"))) == 6 and len(list(tmp_path.glob("replay-*.png"))) == 3 and (tmp_path / "concept-005.png").read_bytes() == first


def test_loss_masks_weigh_the_shape_and_its_edge_fully_and_the_background_less(tmp_path):
    scenes = write_concept_dataset(tmp_path / "data", 8, mask_dir=tmp_path / "masks")
    images = sorted((tmp_path / "data").glob("*.png"))
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert len(images) == 12 and [p.name for p in masks] == [p.name for p in images]
    background = round(255 * MASK_BACKGROUND)
    for scene, path in zip(scenes, images):
        mask = np.asarray(Image.open(tmp_path / "masks" / path.name))
        pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
        drawn = np.abs(pixels - np.asarray(PALETTE[scene.background])).sum(-1) > 0  # the shape, edge included
        assert mask.shape == (64, 64) and set(np.unique(mask)) == {background, 255}, path.name
        assert (mask[drawn] == 255).all() and 0 < (mask == 255).mean() < 0.6, path.name
        grown = np.asarray(Image.fromarray(drawn.astype(np.uint8) * 255)
                           .filter(ImageFilter.MaxFilter(2 * MASK_GROW + 3)))
        assert not (mask[grown == 0] == 255).any(), path.name  # grown by MASK_GROW px, not more
    write_concept_dataset(tmp_path / "data", 4, mask_dir=tmp_path / "masks")  # a smaller rerun leaves no stale masks
    assert len(list((tmp_path / "masks").glob("*.png"))) == 6


@pytest.mark.parametrize("shape, colours, words", [("circle", ("red",), "new shapes"), ("heart", ("pink",), "colours"),
                                                  ("heart", (), "colours")])
def test_bad_set_arguments_are_user_errors(shape, colours, words):
    with pytest.raises(SdloraError, match=words):
        new_shape_scenes(shape, 3, colours)
