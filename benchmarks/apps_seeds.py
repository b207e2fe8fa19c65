"""Each demo task (style, art-style, subject, concept) over several training seeds: every target's
figure as mean and spread (min-max, sample standard deviation), as a Markdown table for RESULTS.md.

    python benchmarks/apps_seeds.py [--tasks style art-style subject concept] [--seeds 1 2 3]
                                    [--output runs/apps-seeds] [--threads 1] [--set-demo steps=150 ...]

Each (task, seed) is one `sdlora demo --task TASK --seed SEED` run into <output>/<task>-seed<SEED>/ with
the task's own recipe; a run whose metrics.json is already there is read, not repeated, so an interrupted
sweep continues. The load average and wall time of each run are printed beside its figures.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from sdlora.tiny.demo import DemoSettings, run_demo
from sdlora.tiny.demo_tasks import TASK_NAMES, TASKS


def one_run(task: str, seed: int, out: Path, threads: int, extra: dict) -> dict:
    folder = out / f"{task}-seed{seed}"
    if (folder / "metrics.json").is_file():
        return json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    start = time.perf_counter()
    result = run_demo(DemoSettings(output=folder, task=task, seed=seed, threads=threads, **extra), say=lambda line: None)
    print(f"  {task} seed {seed}: {time.perf_counter() - start:.0f} s, load {result.metrics['machine']}", flush=True)
    return result.metrics


def figures(metrics: dict) -> dict[str, float]:
    """{target: value} plus the subject task's no-prior drift (reported beside the prior's)."""
    out = {t["what"]: t["value"] for t in metrics["targets"]}
    no_prior = metrics["rates"].get("lora_no_prior", {}).get("all", {}).get("drift")
    if no_prior is not None:
        out["class drift WITHOUT prior preservation (reported)"] = no_prior
    return out


def table(task: str, runs: list[dict]) -> str:
    rows = [f"### {task}: {TASKS[task].title} ({len(runs)} training seeds)", "",
            "| figure | target | mean | min-max | sd | passed |", "|---|---|---|---|---|---|"]
    targets = {t["what"]: t["target"] for t in runs[0]["targets"]}
    per_run = [figures(m) for m in runs]
    for what in per_run[0]:
        values = [f[what] for f in per_run if f.get(what) is not None]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        passed = sum(t["passed"] for m in runs for t in m["targets"] if t["what"] == what)
        rows.append(f"| {what} | {targets.get(what, '-')} | {100 * statistics.mean(values):.1f}% | "
                    f"{100 * min(values):.1f}-{100 * max(values):.1f}% | {100 * sd:.1f} | "
                    f"{passed if what in targets else '-'}/{len(runs) if what in targets else '-'} |")
    seconds = [m["seconds"]["total"] for m in runs]
    rows.append(f"\nwall per run: {min(seconds):.0f}-{max(seconds):.0f} s; load average before each run: "
                + ", ".join(f"{m['machine']['load_average_before'][0]:.1f}" for m in runs))
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASK_NAMES), choices=TASK_NAMES)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--output", type=Path, default=Path("runs/apps-seeds"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set-demo", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="DemoSettings fields as FIELD=VALUE (numbers only), e.g. steps=150")
    args = p.parse_args()
    extra = {k: (float(v) if "." in v or "e" in v else int(v)) for k, v in (x.split("=", 1) for x in args.set_demo)}
    for task in args.tasks:
        runs = [one_run(task, seed, args.output, args.threads, extra) for seed in args.seeds]
        print(table(task, runs) + "\n", flush=True)


if __name__ == "__main__":
    main()
