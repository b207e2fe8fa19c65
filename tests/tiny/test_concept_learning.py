"""The concept task (a new shape word from ~100 images in five colours) learns on sd-tiny and combines with
colours it never saw: the shared shortened run (conftest.py concept_run), scored on the three held-out colours."""
import pytest

pytestmark = pytest.mark.slow


def test_the_new_shape_is_drawn_in_colours_it_was_never_shown_in(concept_run):
    r = concept_run.rates
    base, lora = r["base"]["held_out"], r["lora"]["held_out"]
    assert base["shape"] <= 0.10, "sd-tiny should not draw the new shape on its own"
    # measured (conftest CI_TASKS, 16 prompts, seed 42): 0% -> 68.8% (11 of 16; 56.2% with uniform timesteps and
    # 25 replay images, 37.5% before the loss masks), colour 93.8%; 25 points is 4 of 16
    assert lora["shape"] - base["shape"] >= 0.25, r
    assert lora["colour"] >= 0.70, r


def test_the_known_shapes_are_not_forgotten(concept_run):
    change = concept_run.rates["change"]["original"]
    # measured (conftest CI_TASKS, 16 prompts, seed 42): 0.0 points on shape and colour (-12.5 with uniform
    # timesteps and 25 replay images); 12.5 points is 2 of 16 prompts
    assert change["shape"] >= -0.125 and change["colour"] >= -0.125, change
