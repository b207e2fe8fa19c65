"""A self-contained HTML report of a comparison (and its metrics): one file, images embedded as
base64 PNG, no scripts, no external resources, so it opens in any browser without a server and can
be mailed or attached to an issue as it is."""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import TYPE_CHECKING

from sdlora import __version__
from sdlora.fileio import atomic_write_text

if TYPE_CHECKING:  # the report reads a comparison; it never runs one (compare.py imports this module)
    from sdlora.evaluate.compare import CompareResult

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;image-rendering:auto} .note{background:#fff6d6;padding:.6em;border-left:4px solid #e0b000}
code{background:#f3f3f3;padding:0 .2em} details{margin:.3em 0}
"""
MAX_VALUE_CHARS = 400  # kohya metadata such as ss_tag_frequency can be megabytes


def data_uri(png: Path) -> str:
    """A PNG file as a data: URI (its bytes as they are, text chunks included)."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def esc(value: object) -> str:
    return html.escape(str(value))


def table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4f}</td>'
    return f"<td>{esc(value)}</td>"


def _short(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + f"… ({len(text)} characters)"


def prompts_section(result: CompareResult) -> str:
    rows = [[r.spec.prompt, r.spec.negative_prompt, r.seed, r.spec.steps, r.spec.cfg,
             f"{r.spec.width}x{r.spec.height}", r.spec.scheduler] for r in result.rows]
    return "<h2>Prompts and settings</h2>" + table(
        ["prompt", "negative prompt", "seed", "steps", "CFG", "size", "scheduler"], rows)


def loras_section(result: CompareResult) -> str:
    if not result.loras:
        return ""
    parts = ["<h2>LoRA files</h2>", table(["name", "file", "format", "hash", "modules"],
                                          [[i.adapter, i.spec.path, i.format, i.hash, len(i.modules)] for i in result.loras])]
    for item in result.loras:
        meta = [[key, _short(value)] for key, value in sorted(item.metadata.items())]
        parts.append(f"<details><summary>metadata of {esc(item.adapter)} ({len(meta)} entries)</summary>"
                     + (table(["key", "value"], meta) if meta else "<p>none</p>") + "</details>")
    return "".join(parts)


def metrics_section(metrics: dict | None) -> str:
    """`metrics`: {"columns": {label: {name: value}}, "descriptions": {name: text}}."""
    if not metrics or not metrics.get("columns"):
        return ""
    names = sorted({name for values in metrics["columns"].values() for name in values})
    rows = [[label] + [values.get(name, "—") for name in names] for label, values in metrics["columns"].items()]
    described = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in metrics.get("descriptions", {}).items())
    return "<h2>Metrics</h2>" + table(["column"] + names, rows) + (f"<ul>{described}</ul>" if described else "")


def render(result: CompareResult, *, title: str, metrics: dict | None = None, notes: list[str] | None = None) -> str:
    job = result.job
    settings = [["model", result.model], ["dtype", job.dtype], ["images per prompt", job.num_images],
                ["columns", ", ".join(c.label for c in result.columns)], ["sdlora", __version__]]
    notes_html = "".join(f'<p class="note">{esc(n)}</p>' for n in notes or [])
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>{notes_html}"
            f"{metrics_section(metrics)}<h2>Grid</h2><p>Rows: prompt and seed. Columns: base model and LoRA weights.</p>"
            f"<img alt='comparison grid' src='{data_uri(result.grid_path)}'>"
            f"{prompts_section(result)}{loras_section(result)}<h2>Run</h2>{table(['setting', 'value'], settings)}"
            "</body></html>\n")


def write_report(path: Path, result: CompareResult, *, title: str, metrics: dict | None = None,
                 notes: list[str] | None = None) -> Path:
    atomic_write_text(path, render(result, title=title, metrics=metrics, notes=notes))
    return path
