"""One shortened `sdlora demo` run for the whole session: the demo-output tests (test_demo.py) and
the learning test (test_learning.py) read the same run, so CI pays for one LoRA training."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

# The CI run: the demo's recipe with fewer steps, fewer scored prompts and a 2-prompt grid. One
# torch thread: on a shared 2-core machine two spinning OpenMP threads can run 10x slower.
CI_DEMO = {"steps": 200, "eval_prompts": 16, "grid_prompts": 2, "threads": 1}


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


# The CI runs of the other demo tasks: each task's recipe, shortened to what still shows learning.
# One shared run per task (tests/tiny/test_task_learning.py reads it); the numbers each one reads
# and its time are in the issue-15 section of benchmarks/RESULTS.md.
CI_TASKS = {
    "art-style": {"steps": 200, "eval_prompts": 8, "grid_prompts": 1, "threads": 1},
    "concept": {"steps": 200, "images": 48, "eval_prompts": 8, "grid_prompts": 1, "threads": 1},
    "subject": {"steps": 120, "class_images": 8, "eval_prompts": 8, "grid_prompts": 1, "threads": 1},
}


def _task_run(task: str, tmp_path_factory) -> DemoRun:
    from sdlora.tiny.demo import DemoSettings, run_demo

    settings = DemoSettings(output=tmp_path_factory.mktemp(task), task=task, **CI_TASKS[task])
    lines: list[str] = []
    result = run_demo(settings, say=lines.append)
    return DemoRun(result, result.settings, "\n".join(lines))


@pytest.fixture(scope="session")
def art_style_run(tmp_path_factory) -> DemoRun:
    return _task_run("art-style", tmp_path_factory)


@pytest.fixture(scope="session")
def concept_run(tmp_path_factory) -> DemoRun:
    return _task_run("concept", tmp_path_factory)


@pytest.fixture(scope="session")
def subject_run(tmp_path_factory) -> DemoRun:
    return _task_run("subject", tmp_path_factory)
