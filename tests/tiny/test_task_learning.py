"""The demo tasks beyond `style` learn on sd-tiny (shortened runs shared per task, see conftest.py
CI_TASKS): the checker's rate for what the task teaches must rise by 30 points over the base model on
held-out seeds. A LoRA that does not train (or trains the wrong thing) stays near the base rates and
fails. The subject task's run is test_subject_learning.py, the concept task's test_concept_learning.py."""
import pytest

pytestmark = pytest.mark.slow


def test_art_style_is_learned(art_style_run):
    r = art_style_run.rates
    base, lora = r["base"]["trigger"], r["lora"]["trigger"]
    assert base["style"] <= 0.25, "sd-tiny should not draw hollow shapes on its own"
    # measured (conftest CI_TASKS): 12.5% -> 87.5% and 100% (two seeds; 87.5% again at seed 42 with the recipe's
    # 64 large images now), a 75-point rise or more at 8 images a cell; 30 points leaves room
    assert lora["style"] - base["style"] >= 0.30, r
