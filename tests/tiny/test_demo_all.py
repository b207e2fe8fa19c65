import json

from PIL import Image

from sdlora.tiny.demo_all import summarise, summary_text, write_summary
from sdlora.tiny.demo_tasks import TASK_NAMES, TASKS


def fake_metrics(name: str, passed: bool) -> dict:
    """A metrics.json as demo.write_outputs writes it (only the keys the summary reads)."""
    task = TASKS[name]
    targets = [{"what": what, "value": 0.5, "target": f"{op} {t:g}", "passed": passed}
               for what, _, op, t in task.targets]
    return {"application": f"examples/{task.application}", "title": task.title, "passed": passed,
            "targets": targets, "seconds": {"total": 100.0}}


def test_summary_maps_every_task_to_its_application_and_verdict(tmp_path):
    metrics = {name: fake_metrics(name, name != "concept") for name in TASK_NAMES}
    summary = summarise(metrics)
    assert not summary["passed"] and [n for n, t in summary["tasks"].items() if not t["passed"]] == ["concept"]
    assert {t["application"] for t in summary["tasks"].values()} == {
        "examples/anime-style", "examples/art-style", "examples/personal-portrait", "examples/fantasy-creatures"}
    grid = tmp_path / "style-grid.png"
    Image.new("RGB", (128, 64), "red").save(grid)
    page = write_summary(tmp_path / "all", summary, {"style": grid})
    html = page.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 1 and "some targets NOT met" in html
    for name in TASK_NAMES:
        assert f"href='{name}/report.html'" in html and TASKS[name].application in html
    assert json.loads((tmp_path / "all" / "summary.json").read_text()) == summary
    text = summary_text(summary)
    assert "concept" in text and "FAIL" in text and text.count("ok") == 3
