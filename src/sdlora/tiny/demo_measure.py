"""A demo task's measurements: its prompt sets sampled with the LoRA off (multiplier 0: exactly the base
model) and on, read by the checker, as {model: {prompt set: rates}} (rates: see demo_eval.rates).

Derived rates: `drift` (share of images the checker reads as the task's subject shape, for the subject
task), an `all` set pooling the drift sets, and for the concept task a `change` model holding LoRA
minus base on the original shapes. Prompt i of every set uses seed EVAL_SEED + i (demo_eval), so the
base and the LoRA see the same prompts and seeds.
"""
from __future__ import annotations

from sdlora.tiny.demo_eval import eval_seeds, rates
from sdlora.tiny.demo_tasks import Task

# Prompt sets measured with the LoRA off, per task (the LoRA is measured on every set).
BASE_SETS: dict[str, tuple[str, ...]] = {
    "style": ("trigger",), "art-style": ("trigger",), "subject": ("recontext", "drift", "bare_class"),
    "concept": ("held_out", "original"),
}
DRIFT_SETS = ("drift", "bare_class")


def set_size(task: Task, name: str, eval_prompts: int) -> int:
    """Prompts scored in one set: `eval_prompts`, but the bare-class set once per colour at most."""
    return min(eval_prompts, 8) if name == "bare_class" else eval_prompts


def measure_sets(components, task: Task, names, *, eval_prompts: int, rounds: int, guidance: float, steps: int,
                 label: str, known: dict | None = None) -> dict:
    """{set: rates} for the named prompt sets of `task` with the model as it is now (`known`: images of
    this model already drawn, by (prompt, seed); see demo_eval.rates)."""
    out = {}
    for name in names:
        prompt_set = task.prompt_sets[name]
        count = set_size(task, name, eval_prompts)
        out[name] = rates(components, prompt_set.prompts(count), expected_style=prompt_set.style,
                          seeds=eval_seeds(count, rounds), guidance=guidance, steps=steps,
                          desc=f"{label}, {name} prompts", known=known)
    return _derive(task, out)


def _derive(task: Task, sets: dict) -> dict:
    if task.name == "subject":
        for group in sets.values():
            group["drift"] = group["read"].get(task.shape, 0.0)
        pooled = [sets[n] for n in DRIFT_SETS if n in sets]
        if pooled:
            n = sum(g["n"] for g in pooled)
            sets["all"] = {"drift": sum(g["drift"] * g["n"] for g in pooled) / n, "n": n}
    return sets


def measure(components, adapter: str, task: Task, *, eval_prompts: int, rounds: int, guidance: float,
            steps: int, lora_sets=None, known: dict | None = None) -> dict:
    """{"base": {set: rates}, "lora": {set: rates}} (plus "change" for the concept task) for the LoRA
    attached as `adapter`, measured on `lora_sets` (default: every set of the task); its multiplier is
    as it was afterwards. `known`: {"base" | "lora": {(prompt, seed): image}} already drawn (the grid's)."""
    from sdlora.formats.apply import merged
    from sdlora.lora import multiplier

    nets = [components.unet, components.text_encoder]
    settings = dict(eval_prompts=eval_prompts, rounds=rounds, guidance=guidance, steps=steps)
    with multiplier(nets, adapter, 0.0):
        base = measure_sets(components, task, BASE_SETS[task.name], label="base", known=(known or {}).get("base"),
                            **settings)
    with multiplier(nets, adapter, 1.0), merged(components):  # merged: the same images, drawn faster
        lora = measure_sets(components, task, lora_sets or task.prompt_sets, label="LoRA",
                            known=(known or {}).get("lora"), **settings)
    result = {"base": base, "lora": lora}
    if task.name == "concept":
        result["change"] = {"original": {k: lora["original"][k] - base["original"][k] for k in ("shape", "colour")}}
    return result
