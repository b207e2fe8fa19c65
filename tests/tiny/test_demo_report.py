import pytest

from sdlora.tiny.demo_report import TARGETS, check_targets, report_metrics, report_notes, summary_table


def rates(base_style=0.05, lora_style=0.9, lora_colour=0.8, leak=0.3):
    group = {"colour": 1.0, "shape": 0.95, "both": 0.95, "n": 40}
    return {"base": {"trigger": {**group, "style": base_style}},
            "lora": {"trigger": {**group, "style": lora_style, "colour": lora_colour},
                     "no_trigger": {**group, "style": leak}}}


@pytest.mark.parametrize("values, verdicts", [
    ({}, [True, True, True]),
    ({"base_style": 0.10, "lora_style": 0.80, "lora_colour": 0.70}, [True, True, True]),  # limits included
    ({"base_style": 0.125}, [False, True, True]),
    ({"lora_style": 0.775}, [True, False, True]),
    ({"lora_colour": 0.675}, [True, True, False]),
])
def test_targets(values, verdicts):
    out = check_targets(rates(**values))
    assert [t["passed"] for t in out] == verdicts
    assert [t["target"] for t in out] == ["<= 0.1", ">= 0.8", ">= 0.7"]
    assert len(out) == len(TARGETS)


def test_a_missing_rate_fails_its_target():
    out = check_targets({"base": {"trigger": {"style": 0.0}}})
    assert [t["passed"] for t in out] == [True, False, False] and out[1]["value"] is None


def test_report_metrics_in_percent_with_leak_only_for_the_lora():
    m = report_metrics(rates(), "base", "sks-striped @ 1")
    assert list(m["columns"]) == ["base", "sks-striped @ 1"]
    assert m["columns"]["base"]["style, trigger prompts %"] == 5.0
    assert m["columns"]["sks-striped @ 1"]["style, prompts without trigger (leak) %"] == 30.0
    assert "style, prompts without trigger (leak) %" not in m["columns"]["base"]
    assert "leak" in m["descriptions"]


def test_summary_table_and_notes():
    r = rates(lora_style=0.5)
    text = summary_table(r, check_targets(r))
    assert "style, trigger prompts" in text and "5.0%" in text and "50.0%" in text
    assert "FAIL LoRA style rate, trigger prompts 50.0% (target >= 0.8)" in text
    assert "ok   base style rate" in text and "40 images per cell" in text
    notes = report_notes(check_targets(r), r)
    assert notes[0].startswith("some targets NOT met") and "30.0%" in notes[1]
    assert report_notes(check_targets(rates()), rates())[0].startswith("all targets met")


def test_a_change_exactly_at_its_threshold_passes():
    """0.95 - 1.0 is -0.050000000000000044 in floats: the concept task's "within 5 points" read FAIL at -5.0%."""
    target = (("colour change", ("change", "original", "colour"), ">=", -0.05),)
    rates = {"change": {"original": {"colour": 0.95 - 1.0}}}
    assert check_targets(rates, target)[0]["passed"]
    rates["change"]["original"]["colour"] = 0.925 - 1.0
    assert not check_targets(rates, target)[0]["passed"]
