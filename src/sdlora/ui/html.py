"""HTML fragments for the page. Every piece of user text (captions, prompts, paths, metadata) goes
through `esc`, so a caption such as `<img src=x onerror=alert(1)>` is shown as text, never run."""
from __future__ import annotations

import html
from collections.abc import Iterable, Mapping


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def table(header: Iterable[object], rows: Iterable[Iterable[object]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table class='sdlora-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pairs(mapping: Mapping[str, object]) -> str:
    return table(["", ""], [[k, v] for k, v in mapping.items()])


def pre(text: str) -> str:
    return f"<pre class='sdlora-pre'>{esc(text)}</pre>"


def message(text: str, kind: str = "ok") -> str:
    """A one-line status: kind `ok`, `warn` or `error`."""
    return f"<div class='sdlora-msg sdlora-{esc(kind)}'>{esc(text)}</div>"


def section(title: str, body: str) -> str:
    return f"<h4>{esc(title)}</h4>{body}"


def inspect_report(report: dict) -> str:
    """`sdlora dataset inspect`'s report (sdlora.data.inspect) as HTML."""
    t, caps = report["totals"], report["captions"]
    parts = [message(f"{t['files']} image files: {t['usable']} usable, {t['skipped']} skipped",
                     "ok" if t["usable"] else "error")]
    parts.append(table(["folder", "role", "usable", "skipped", "items per epoch"],
                       [[s["path"], s["role"], s["usable"], s["skipped"], s["items_per_epoch"]]
                        for s in report["sources"]]))
    if report["skipped"]:
        parts.append(section("Skipped files", table(["file", "reason"],
                                                    [[k["path"], k["reason"]] for k in report["skipped"]])))
    parts.append(section("Buckets", table(["bucket", "images"], report["buckets"].items())))
    parts.append(section("Caption sources", pairs({
        "caption files": caps["from_sidecar"], "metadata rows": caps["from_metadata"],
        "folder names": caps["from_folder_name"], "prompt": caps["from_prompt"], "missing": caps["missing"],
        "empty": caps["empty_files"], "too long": caps["too_long"]})))
    if report["top_tags"]:
        parts.append(section("Top tags", esc(", ".join(f"{tag} ({n})" for tag, n in report["top_tags"]))))
    if report["duplicates"]:
        parts.append(section("Duplicates", table(["same bytes"], [[" = ".join(g)] for g in report["duplicates"]])))
    parts += [message(w, "warn") for w in report["warnings"]]
    return "\n".join(parts)


def caption_diff(plan: list[tuple[str, str, str]]) -> str:
    """A preview of caption edits: (file, before, after) rows."""
    if not plan:
        return message("no caption changes", "warn")
    return message(f"{len(plan)} caption files will change") + table(["file", "before", "after"], plan)
