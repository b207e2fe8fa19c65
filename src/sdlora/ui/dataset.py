"""The Dataset tab's work: folders with role and repeats, the inspect report, captions and their edits.

Folders are written one per line as `PATH`, `PATH | class` or `PATH | instance | 10` (role, repeats).
Captions are edited in their `.txt` sidecar (atomic write; the image is never touched). Bulk trigger
edits are planned first (a preview of every changed file), then written.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdlora.config import DataConfig, SourceConfig
from sdlora.data.captions import join_tags, split_tags
from sdlora.data.inspect import inspect_paths
from sdlora.data.sources import scan_source
from sdlora.errors import SdloraError
from sdlora.fileio import atomic_write_text

ROLES = ("instance", "class")
TRIGGER_MODES = ("add first", "add last", "replace tag", "remove tag")


@dataclass(frozen=True)
class Item:
    """One usable image of the chosen folders, with its caption and sidecar file."""

    image: str
    caption: str
    sidecar: str
    source: int


def parse_folders(text: str) -> list[SourceConfig]:
    """`PATH [| ROLE [| REPEATS]]` per line -> SourceConfigs; a bad line is named."""
    sources = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = [p.strip() for p in line.split("|")]
        if not parts[0]:
            continue
        role = parts[1] if len(parts) > 1 and parts[1] else "instance"
        if role not in ROLES:
            raise SdloraError(f"folders line {n}: role {role!r} must be instance or class")
        repeats = parts[2] if len(parts) > 2 and parts[2] else "1"
        if not repeats.isdigit() or int(repeats) < 1:
            raise SdloraError(f"folders line {n}: repeats {repeats!r} must be a whole number of at least 1")
        if not Path(parts[0]).expanduser().is_dir():
            raise SdloraError(f"folders line {n}: {parts[0]} is not a folder")
        sources.append(SourceConfig(path=str(Path(parts[0]).expanduser()), role=role, repeats=int(repeats)))
    if not sources:
        raise SdloraError("no folder given: write one image folder per line")
    return sources


def format_folders(sources: list[SourceConfig]) -> str:
    return "\n".join(f"{s.path} | {s.role} | {s.repeats}" for s in sources)


def inspect(sources: list[SourceConfig], resolution: int = 512) -> dict:
    """The same report as `sdlora dataset inspect`."""
    return inspect_paths(None, DataConfig(sources=sources, resolution=resolution))


def items(sources: list[SourceConfig]) -> list[Item]:
    """Every usable image with its caption, in folder order."""
    out = []
    for i, source in enumerate(sources):
        scan = scan_source(source, i, max_pixels=DataConfig().max_image_pixels)
        for record in scan.records:
            sidecar = Path(record.path).with_suffix(source.caption_extension)
            out.append(Item(record.path, record.caption, str(sidecar), i))
    return out


def _inside(path: Path, sources: list[SourceConfig]) -> bool:
    path = path.resolve()
    return any(path.is_relative_to(Path(s.path).resolve()) for s in sources)


def save_caption(item: Item, text: str, sources: list[SourceConfig]) -> Path:
    """Write the caption to the image's sidecar, atomically; only inside the chosen folders."""
    sidecar = Path(item.sidecar)
    if not _inside(sidecar, sources):
        raise SdloraError(f"{sidecar} is outside the chosen folders; captions are only written there")
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return atomic_write_text(sidecar, text + "\n")


def edit_tags(caption: str, mode: str, tag: str, new: str = "") -> str:
    """One caption after a bulk edit: add `tag` first/last (once), replace `tag` by `new`, remove `tag`."""
    tags, tag, new = split_tags(caption), tag.strip(), new.strip()
    if mode == "add first":
        return join_tags([tag] + [t for t in tags if t != tag])
    if mode == "add last":
        return join_tags([t for t in tags if t != tag] + [tag])
    if mode == "replace tag":
        return join_tags(list(dict.fromkeys(new if t == tag else t for t in tags)))
    if mode == "remove tag":
        return join_tags([t for t in tags if t != tag])
    raise SdloraError(f"bulk edit: mode {mode!r} is not one of {', '.join(TRIGGER_MODES)}")


def plan_edit(all_items: list[Item], mode: str, tag: str, new: str = "") -> list[tuple[str, str, str]]:
    """(sidecar, before, after) for every caption the edit changes: the preview, nothing written."""
    if not tag.strip() or "," in tag:
        raise SdloraError("bulk edit: give one tag or trigger word (no commas)")
    if mode == "replace tag" and (not new.strip() or "," in new):
        raise SdloraError("bulk edit: give the replacement tag (no commas)")
    plan = []
    for item in all_items:
        after = edit_tags(item.caption, mode, tag, new)
        if after != item.caption:
            plan.append((item.sidecar, item.caption, after))
    return plan


def apply_plan(plan: list[tuple[str, str, str]], sources: list[SourceConfig]) -> int:
    """Write a previewed plan (each file atomically); returns the number of files written."""
    for sidecar, _, after in plan:
        save_caption(Item("", "", sidecar, 0), after, sources)
    return len(plan)
