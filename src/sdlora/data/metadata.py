"""Hugging Face imagefolder metadata: `metadata.jsonl` / `metadata.csv` with `file_name` + `text`.

Any folder under a source may hold one; `file_name` is relative to that folder. A bad row is noted
(file and line) and skipped, never fatal: the images it names simply have no metadata caption.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
# Caption column, in order of preference (`text` is the imagefolder convention).
CAPTION_COLUMNS = ("text", "caption")


def _caption_of(row: dict) -> str | None:
    for column in CAPTION_COLUMNS:
        value = row.get(column)
        if value is not None:
            return str(value).strip()
    return None


def parse_rows(rows, where: str, folder: Path, notes: list[str]) -> dict[Path, str]:
    """Rows (dicts, numbered from 1 after any header) -> {image path: caption}; problems go to `notes`."""
    out: dict[Path, str] = {}
    for line, row in rows:
        if not isinstance(row, dict):
            notes.append(f"{where} line {line}: expected an object with file_name and text")
            continue
        name, caption = row.get("file_name"), _caption_of(row)
        if not name or caption is None:
            notes.append(f"{where} line {line}: needs `file_name` and `text`")
            continue
        out[folder / str(name)] = caption
    return out


def _jsonl_rows(path: Path, notes: list[str]):
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            notes.append(f"{path} line {number}: not valid JSON ({exc.msg})")


def _csv_rows(path: Path, notes: list[str]):
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    reader = csv.DictReader(text.splitlines())
    try:
        for number, row in enumerate(reader, start=2):
            yield number, row
    except csv.Error as exc:
        notes.append(f"{path}: not valid CSV ({exc})")


def read_metadata(root: Path, notes: list[str]) -> dict[Path, str]:
    """Captions from every metadata file under `root` (hidden folders skipped)."""
    captions: dict[Path, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        folder = Path(dirpath)
        for name in METADATA_FILES:
            if name not in filenames:
                continue
            path = folder / name
            rows = _jsonl_rows(path, notes) if name.endswith(".jsonl") else _csv_rows(path, notes)
            try:
                captions.update(parse_rows(rows, str(path), folder, notes))
            except OSError as exc:
                notes.append(f"{path}: cannot be read ({exc.strerror or exc})")
    return captions
