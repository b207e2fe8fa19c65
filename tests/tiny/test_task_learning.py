"""Each demo task learns on sd-tiny (shortened runs shared per task, see conftest.py CI_TASKS): the
checker's rate for what the task teaches must rise by 40 points over the base model on held-out seeds,
and for the subject task prior preservation must lower class drift against the same run without it.
A LoRA that does not train (or trains the wrong thing) stays near the base rates and fails."""
import json

import pytest

from sdlora.tiny.demo_sets import SUBJECT_SHAPE

pytestmark = pytest.mark.slow


def rates(run) -> dict:
    return json.loads((run.result.output / "metrics.json").read_text(encoding="utf-8"))["rates"]


def test_art_style_is_learned(art_style_run):
    r = rates(art_style_run)
    base, lora = r["base"]["trigger"], r["lora"]["trigger"]
    assert base["style"] <= 0.15, "sd-tiny should not draw hollow shapes on its own"
    assert lora["style"] - base["style"] >= 0.40, r


def test_concept_is_learned_in_colours_it_was_never_shown_in(concept_run):
    r = rates(concept_run)
    base, lora = r["base"]["held_out"], r["lora"]["held_out"]
    assert lora["shape"] - base["shape"] >= 0.40, r
    assert lora["colour"] >= 0.5, "the held-out colours must still be obeyed"
    assert (concept_run.result.output / "report.html").is_file()


def test_subject_is_learned_and_prior_preservation_lowers_class_drift(subject_run):
    r = rates(subject_run)
    base, lora = r["base"]["recontext"], r["lora"]["recontext"]
    assert lora["shape"] - base["shape"] >= 0.40, r
    assert r["base"]["recontext"]["read"].get(SUBJECT_SHAPE, 0.0) == base["shape"]
    assert len(list((subject_run.result.output / "class").glob("*.png"))) == subject_run.settings.class_images
    with_prior, without = r["lora"]["all"]["drift"], r["lora_no_prior"]["all"]["drift"]
    assert without > 0, f"no class drift even without prior preservation (with: {with_prior:.2f}): say so in the notes"
    assert with_prior < without, r
