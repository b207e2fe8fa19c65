from itertools import product

import pytest

from sdlora.tiny.demo_measure import BASE_SETS, _derive
from sdlora.tiny.demo_report import check_targets
from sdlora.tiny.demo_sets import SUBJECT_COLOURS, SUBJECT_SHAPE
from sdlora.tiny.demo_tasks import TASK_NAMES, TASKS, PromptSet, concept_task, subject_task
from sdlora.tiny.world import COLOURS, SHAPE_NAMES


def test_every_task_maps_to_an_application_and_its_targets_name_measured_sets():
    assert TASK_NAMES == ("style", "art-style", "subject", "concept")
    for task in TASKS.values():
        assert task.application and task.targets and task.rows
        assert set(BASE_SETS[task.name]) <= set(task.prompt_sets)
        for _, (model, prompts, _), op, _ in task.targets:
            assert op in ("<=", ">=")
            assert model in ("base", "lora", "change")
            assert prompts in task.prompt_sets or prompts == "all"
            if model == "base":
                assert prompts in BASE_SETS[task.name]


def test_prompt_set_covers_every_colour_and_shape_pair_once():
    prompts = PromptSet("{a} {colour} {shape}").prompts(40)
    assert {(c, s) for _, c, s in prompts} == set(product(COLOURS, SHAPE_NAMES))
    assert prompts[1] == ("an orange square", "orange", "square")


def test_subject_prompts_put_the_subject_in_colours_absent_from_its_images():
    recontext = TASKS["subject"].prompt_sets["recontext"].prompts(12)
    assert {s for _, _, s in recontext} == {SUBJECT_SHAPE}
    assert not {c for _, c, _ in recontext} & set(SUBJECT_COLOURS)
    assert all("sks shape" in p for p, _, _ in recontext)
    assert all("sks" not in p for p, _, _ in TASKS["subject"].prompt_sets["bare_class"].prompts(8))


def test_drift_is_the_share_read_as_the_subject_pooled_over_the_drift_sets():
    sets = {"drift": {"read": {SUBJECT_SHAPE: 0.25, "circle": 0.75}, "n": 8},
            "bare_class": {"read": {"star": 1.0}, "n": 4}, "recontext": {"read": {}, "n": 4}}
    out = _derive(TASKS["subject"], sets)
    assert out["drift"]["drift"] == 0.25 and out["bare_class"]["drift"] == 0.0
    assert out["all"] == {"drift": pytest.approx(2 / 12), "n": 12}


def test_a_task_built_for_another_new_shape_prompts_writes_and_reads_that_shape(tmp_path):
    subject, concept = subject_task("arrow", ("blue",)), concept_task("crescent", ("red", "green"))
    assert subject.shape == "arrow" and concept.shape == "crescent" and concept.lora_name == "crescent-concept"
    known = ("a circle", "a square", "a triangle", "a star", "a cross")
    bare = tuple(p for p, _, _ in subject.prompt_sets["bare_class"].prompts(len(COLOURS)))
    assert subject.class_prompts == ("a shape",) + bare + known == TASKS["subject"].class_prompts
    assert len(set(bare)) == len(COLOURS) and "a blue shape" in bare  # the class in every colour, not only its own
    assert {(c, s) for _, c, s in subject.prompt_sets["recontext"].prompts(7)} == {(c, "arrow") for c in COLOURS
                                                                                    if c != "blue"}
    assert {s for _, _, s in concept.prompt_sets["held_out"].prompts(6)} == {"crescent"}
    assert {s.shape for s in subject.data(tmp_path / "s", 4)} == {"arrow"}
    assert {(s.shape, s.colour in ("red", "green")) for s in concept.data(tmp_path / "c", 6)} == {("crescent", True)}
    out = _derive(subject, {"drift": {"read": {"arrow": 0.5, SUBJECT_SHAPE: 0.5}, "n": 4}})
    assert out["drift"]["drift"] == 0.5


@pytest.mark.parametrize("drift, passed", [(0.05, True), (0.2, False)])
def test_subject_targets_judge_the_pooled_drift(drift, passed):
    rates = {"base": {"recontext": {"shape": 0.0}}, "lora": {"recontext": {"shape": 0.9, "colour": 0.8},
                                                             "all": {"drift": drift}}}
    verdicts = check_targets(rates, TASKS["subject"].targets)
    assert [t["passed"] for t in verdicts] == [True, True, True, passed]
