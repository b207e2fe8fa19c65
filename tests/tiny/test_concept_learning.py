"""The concept task (a new shape word from ~100 images in five colours) learns on sd-tiny and combines with
colours it never saw: the shared shortened run (conftest.py concept_run), scored on the three held-out colours."""
import pytest

pytestmark = pytest.mark.slow


def test_the_new_shape_is_drawn_in_colours_it_was_never_shown_in(concept_run):
    r = concept_run.rates
    base, lora = r["base"]["held_out"], r["lora"]["held_out"]
    assert base["shape"] <= 0.10, "sd-tiny should not draw the new shape on its own"
    # measured (conftest CI_TASKS, 16 prompts, seed 42): 0% -> 56.2% (9 of 16; 37.5% before the loss masks),
    # colour 100%; 25 points is 4 of 16
    assert lora["shape"] - base["shape"] >= 0.25, r
    assert lora["colour"] >= 0.70, r
