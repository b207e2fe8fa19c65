"""`sdlora demo --task all`: every demo task into its own folder (<output>/<task>/), then one summary
page (<output>/summary.html + summary.json) mapping each task to the application in examples/ it stands
in for, with its targets, verdict, time and before/after grid.
"""
from __future__ import annotations

import base64
import html
import json
from dataclasses import replace
from pathlib import Path

from sdlora.fileio import atomic_write_text
from sdlora.tiny.demo_tasks import TASK_NAMES, TASKS


def run_all(s, *, say=print) -> dict:
    """Run every task with settings `s` (its task field ignored; None fields take each task's recipe)
    and write the summary page; returns the summary dict."""
    from sdlora.tiny.demo import run_demo

    out = Path(s.output)
    results = {}
    for name in TASK_NAMES:
        say(f"\n=== task {name} ({TASKS[name].title}) ===")
        results[name] = run_demo(replace(s, task=name, output=out / name), say=say)
    summary = summarise({name: r.metrics for name, r in results.items()})
    write_summary(out, summary, {name: r.paths["grid"] for name, r in results.items()})
    say("\n" + summary_text(summary) + f"\nsummary page: {out / 'summary.html'}")
    return summary


def summarise(metrics: dict[str, dict]) -> dict:
    """{"passed", "tasks": {name: {application, title, passed, targets, seconds}}} from each metrics.json."""
    tasks = {name: {"application": m["application"], "title": m["title"], "passed": m["passed"],
                    "targets": m["targets"], "seconds": m["seconds"]["total"]} for name, m in metrics.items()}
    return {"passed": all(t["passed"] for t in tasks.values()), "tasks": tasks}


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def summary_text(summary: dict) -> str:
    lines = ["task        application                  verdict  seconds"]
    for name, t in summary["tasks"].items():
        lines.append(f"{name:<11} {t['application']:<28} {'ok' if t['passed'] else 'FAIL':<7}  {t['seconds']:>7.0f}")
    return "\n".join(lines)


def write_summary(out: Path, summary: dict, grids: dict[str, Path]) -> Path:
    """summary.json and a self-contained summary.html (grids inlined as PNG data)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>sdlora demo: four applications on "
             "sd-tiny</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;"
             "text-align:left}.ok{color:#070}.fail{color:#b00}img{image-rendering:pixelated;max-width:100%}</style>"
             "</head><body>", "<h1>sdlora demo: four applications on sd-tiny</h1>",
             f"<p class='{'ok' if summary['passed'] else 'fail'}'>"
             f"{'all tasks met their targets' if summary['passed'] else 'some targets NOT met'}</p>",
             "<table><tr><th>task</th><th>application</th><th>what is learned</th><th>verdict</th><th>seconds</th></tr>"]
    for name, t in summary["tasks"].items():
        verdict = "<span class='ok'>ok</span>" if t["passed"] else "<span class='fail'>FAIL</span>"
        parts.append(f"<tr><td><a href='{name}/report.html'>{name}</a></td><td>{html.escape(t['application'])}</td>"
                     f"<td>{html.escape(t['title'])}</td><td>{verdict}</td><td>{t['seconds']:.0f}</td></tr>")
    parts.append("</table>")
    for name, t in summary["tasks"].items():
        parts.append(f"<h2>{name}: {html.escape(t['title'])} ({html.escape(t['application'])})</h2><ul>")
        for target in t["targets"]:
            mark = "ok" if target["passed"] else "fail"
            parts.append(f"<li class='{mark}'>{html.escape(target['what'])}: {_pct(target['value'])} "
                         f"(target {html.escape(target['target'])})</li>")
        parts.append("</ul>")
        grid = grids.get(name)
        if grid and Path(grid).is_file():
            data = base64.b64encode(Path(grid).read_bytes()).decode("ascii")
            parts.append(f"<img alt='{name} grid: base and LoRA' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    atomic_write_text(out / "summary.html", "\n".join(parts) + "\n")
    return out / "summary.html"
