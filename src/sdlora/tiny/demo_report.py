"""The demo's numbers as data and as text: the targets it is judged by, the metrics table of the HTML
report, and the summary table printed at the end. Pure functions over the `rates` dict that
demo_measure.measure returns ({model: {prompt set: rates}}, e.g. {"base": {"trigger": r}, "lora":
{"trigger": r, "no_trigger": r}}); TARGETS and ROWS are the style task's, other tasks pass their own.
"""
from __future__ import annotations

import operator

# (what, (model, prompts, rate), comparison, threshold): the demo's pass/fail targets.
TARGETS: tuple[tuple[str, tuple[str, str, str], str, float], ...] = (
    ("base style rate, trigger prompts", ("base", "trigger", "style"), "<=", 0.10),
    ("LoRA style rate, trigger prompts", ("lora", "trigger", "style"), ">=", 0.80),
    ("LoRA colour rate, trigger prompts", ("lora", "trigger", "colour"), ">=", 0.70),
)
_COMPARE = {"<=": operator.le, ">=": operator.ge}

# Rows of the printed table and of the report: (label, prompts, rate).
ROWS: tuple[tuple[str, str, str], ...] = (
    ("style, trigger prompts", "trigger", "style"),
    ("colour, trigger prompts", "trigger", "colour"),
    ("shape, trigger prompts", "trigger", "shape"),
    ("style, prompts without trigger (leak)", "no_trigger", "style"),
    ("colour, prompts without trigger", "no_trigger", "colour"),
)
DESCRIPTIONS = {
    "style": "share of images in which the checker sees the trained style (stripes)",
    "colour": "share of images whose shape has the prompted colour",
    "shape": "share of images showing the prompted shape",
    "leak": "style rate of the LoRA on the same prompts without the trigger (reported, not a target)",
    "base": "the same model with the LoRA at weight 0 (pixel-identical to no LoRA), same prompts and seeds",
}


def rate(rates: dict, model: str, prompts: str, name: str) -> float | None:
    return rates.get(model, {}).get(prompts, {}).get(name)


# Columns of the tables: (model key, label); labels of the base and LoRA columns are given by the caller.
EXTRA_MODELS = {"lora_no_prior": "LoRA without prior preservation"}


def check_targets(rates: dict, targets=TARGETS) -> list[dict]:
    """One entry per target: {what, value, target ("<= 0.1"), passed}; a missing value fails. A value is
    compared rounded to 9 decimals: a rate is a share of images, and a difference of two such shares
    exactly at a threshold (0.95 - 1.0 against -0.05) must not fail by float rounding."""
    out = []
    for what, (model, prompts, name), op, threshold in targets:
        value = rate(rates, model, prompts, name)
        passed = value is not None and _COMPARE[op](round(value, 9), threshold)
        out.append({"what": what, "value": value, "target": f"{op} {threshold:g}", "passed": bool(passed)})
    return out


def _columns(rates: dict, base_label: str, lora_label: str) -> list[tuple[str, str]]:
    extra = [(label, model) for model, label in EXTRA_MODELS.items() if model in rates]
    return [(base_label, "base"), (lora_label, "lora"), *extra]


def report_metrics(rates: dict, base_label: str, lora_label: str, rows=ROWS) -> dict:
    """The report's metrics table: {"columns": {label: {metric: value}}, "descriptions": {...}}
    (the format sdlora.evaluate.report.write_report reads); rates in percent."""
    columns = {}
    for label, model in _columns(rates, base_label, lora_label):
        values = {}
        for row, prompts, name in rows:
            value = rate(rates, model, prompts, name)
            if value is not None:
                values[f"{row} %"] = round(100 * value, 1)
        columns[label] = values
    return {"columns": columns, "descriptions": DESCRIPTIONS}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_table(rates: dict, targets: list[dict], rows=ROWS) -> str:
    """The table printed at the end of the demo: base vs LoRA per row, then each target's verdict."""
    width = max(len(row) for row, _, _ in rows)
    models = [m for _, m in _columns(rates, "base", "LoRA")]
    heads = {"base": "base", "lora": "LoRA", "lora_no_prior": "no prior"}
    lines = [f"{'checker rate':<{width}}  " + "  ".join(f"{heads[m]:>8}" for m in models),
             *(f"{row:<{width}}  " + "  ".join(f"{_pct(rate(rates, m, p, n)):>8}" for m in models)
               for row, p, n in rows)]
    n = rate(rates, "lora", rows[0][1], "n")
    if n:
        lines.append(f"({n} images per cell of the first row, same prompts and seeds for every model)")
    lines.append("targets:")
    lines += [f"  {'ok  ' if t['passed'] else 'FAIL'} {t['what']} {_pct(t['value'])} (target {t['target']})"
              for t in targets]
    return "\n".join(lines)


def report_notes(targets: list[dict], rates: dict) -> list[str]:
    """Lines shown at the top of the HTML report."""
    verdict = "all targets met" if all(t["passed"] for t in targets) else "some targets NOT met"
    notes = [f"{verdict}: " + "; ".join(f"{t['what']} {_pct(t['value'])} (target {t['target']})" for t in targets)]
    leak = rate(rates, "lora", "no_trigger", "style")
    if leak is not None:
        notes.append(f"style leak into prompts without the trigger: {_pct(leak)} (reported, not a target)")
    return notes
