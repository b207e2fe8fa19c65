"""Hugging Face imagefolder metadata: `metadata.jsonl` / `metadata.csv` with `file_name` + `text`.

Any folder under a source may hold one; `file_name` is relative to that folder and must stay inside
it. A bad row is noted (file and line) and skipped, never fatal: the images it names simply have no
metadata caption. A metadata file that the reading policy refuses (a FIFO, a folder, over 256 MiB)
is noted and ignored.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from sdlora.data.files import MAX_METADATA_BYTES, clean_text, FileRefused, parse_json, read_text, relative_inside, shown

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
# Caption column, in order of preference (`text` is the imagefolder convention).
CAPTION_COLUMNS = ("text", "caption")


def _caption_of(row: dict) -> str | None:
    for column in CAPTION_COLUMNS:
        value = row.get(column)
        if isinstance(value, str):
            return clean_text(value).strip()
    return None


def parse_rows(rows, where: str, folder: Path, notes: list[str]) -> dict[Path, str]:
    """Rows (dicts, numbered from 1 after any header) -> {image path: caption}; problems go to `notes`."""
    out: dict[Path, str] = {}
    for line, row in rows:
        if not isinstance(row, dict):
            notes.append(f"{where} line {line}: expected an object with file_name and text")
            continue
        name, caption = row.get("file_name"), _caption_of(row)
        if not isinstance(name, str) or not name or caption is None:
            notes.append(f"{where} line {line}: needs `file_name` and `text` (strings)")
            continue
        path = relative_inside(folder, name)
        if path is None:
            notes.append(f"{where} line {line}: file_name {shown(name)!r} must be a path inside {shown(folder)}")
            continue
        out[path] = caption
    return out


def _jsonl_rows(text: str, where: str, notes: list[str]):
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, parse_json(line)
        except ValueError as exc:
            notes.append(f"{where} line {number}: {exc}")


def _csv_rows(text: str, where: str, notes: list[str]):
    reader = csv.DictReader(text.splitlines())
    try:
        for number, row in enumerate(reader, start=2):
            yield number, row
    except csv.Error as exc:
        notes.append(f"{where}: not valid CSV ({exc})")


def read_metadata(root: Path, notes: list[str]) -> dict[Path, str]:
    """Captions from every metadata file under `root` (hidden folders skipped)."""
    captions: dict[Path, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        folder = Path(dirpath)
        for name in METADATA_FILES:
            if name not in filenames and name not in dirnames:  # a folder so named is noted below
                continue
            path, where = folder / name, shown(folder / name)
            try:
                text = read_text(path, MAX_METADATA_BYTES)
            except FileRefused as exc:
                notes.append(f"{where} is not used: {exc.reason}")
                continue
            rows = _jsonl_rows(text, where, notes) if name.endswith(".jsonl") else _csv_rows(text, where, notes)
            captions.update(parse_rows(rows, where, folder, notes))
    return captions
