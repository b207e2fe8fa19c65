"""One shortened `sdlora demo` run for the whole session: the demo-output tests (test_demo.py) and
the learning test (test_learning.py) read the same run, so CI pays for one LoRA training."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

# The CI run: the demo's recipe shortened to a quarter of its steps at 2.7 times its rate (measured with
# these 12 scored prompts a cell: base style 0% -> LoRA 83%, colour 75% at seed 42; 83% / 67% at seed 7;
# 100 steps at 6e-3 gave 100% / 67%), and a 2-prompt grid.
# One torch thread: on a shared 2-core machine two spinning OpenMP threads can run 10x slower.
CI_DEMO = {"steps": 75, "lr": 8e-3, "eval_prompts": 12, "grid_prompts": 2, "threads": 1}


@dataclass
class DemoRun:
    result: object  # sdlora.tiny.demo.DemoResult
    settings: object  # the DemoSettings it ran with
    printed: str  # everything the demo printed


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    from sdlora.tiny.demo import DemoSettings, run_demo

    settings = DemoSettings(output=tmp_path_factory.mktemp("demo"), **CI_DEMO)
    lines: list[str] = []
    result = run_demo(settings, say=lines.append)
    return DemoRun(result, result.settings, "\n".join(lines))


# The CI run of the art-style task: its recipe, shortened to what still shows learning (the concept and
# subject tasks have no CI run yet: see the issue-15 section of benchmarks/RESULTS.md).
# Measured at 70 steps, lr 8e-3, 8 prompts a cell: hollow 12.5% -> 87.5% at seed 42, -> 100% at seed 7
# (100 steps at 6e-3: 75.0%); the prompted colour is not kept this early (12-50%) and is not asserted.
CI_TASKS = {"art-style": {"steps": 70, "lr": 8e-3, "eval_prompts": 8}}


@dataclass
class TaskRun:
    rates: dict  # {"base": {prompt set: rates}, "lora": {prompt set: rates}} as in a demo's metrics.json
    settings: object  # the resolved DemoSettings


@pytest.fixture(scope="session")
def art_style_run(tmp_path_factory) -> TaskRun:
    """The art-style task as the demo runs it (its dataset, its `sdlora train` recipe through the
    trainer's entry point, its prompts, seeds and checker), shortened (CI_TASKS) and measured only
    where test_task_learning looks: the trigger prompts with the LoRA off (weight 0: the base model)
    and on. The grid, report and leak set every demo task writes are tested on the style run above."""
    from sdlora.generate.job import load_model
    from sdlora.generate.loras import LoraSpec, attach_loras
    from sdlora.tiny.demo import DemoSettings, train_lora
    from sdlora.tiny.demo_measure import measure
    from sdlora.tiny.demo_tasks import TASKS

    out = tmp_path_factory.mktemp("art-style")
    s = DemoSettings(output=out, task="art-style", **CI_TASKS["art-style"]).check().resolved()
    task = TASKS[s.task]
    task.data(out / "data", s.images)
    trained = train_lora(s, task, out, say=lambda line: None)
    components = load_model("tiny", "fp32")
    adapter = attach_loras(components, [LoraSpec(trained.lora_files[0])])[0].adapter
    rates = measure(components, adapter, task, eval_prompts=s.eval_prompts, rounds=s.eval_rounds,
                    guidance=s.guidance, steps=s.sample_steps, lora_sets=("trigger",))
    return TaskRun(rates, s)
