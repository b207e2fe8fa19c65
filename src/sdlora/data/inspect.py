"""`inspect_paths(paths, cfg)`: what a dataset holds and what training will make of it, as a dict.

Uses the same scan and bucket code as `build_datasets`, so its counts are what a run will see. It never
raises for a bad file (those are listed with reasons); only a path that is not a folder, or a bad
setting, raises SdloraError. `render_report(report)` turns the dict into plain text. Every path in the
report is printable text (`files.shown`), so it can be written as JSON whatever the file names.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

from sdlora.config import DataConfig, SourceConfig, load_config
from sdlora.data.build import apply_buckets, caption_transforms, counted
from sdlora.data.buckets import BucketSpec, bucket_name, make_buckets
from sdlora.data.captions import MAX_CAPTION_TOKENS, split_tags, tag_frequency, token_counts
from sdlora.data.files import shown
from sdlora.data.masks import find_masks
from sdlora.data.sources import ImageRecord, scan_source
from sdlora.errors import SdloraError
from sdlora.fileio import atomic_write_text

# Shorter-side bin edges as multiples of the training resolution (at 512 px: 256, 512, 768, 1024, 2048):
# below 1x an image is upscaled, below 0.5x it is blurry; above 2x it is downscaled a lot.
SHORT_SIDE_EDGES = (0.5, 1.0, 1.5, 2.0, 4.0)
TOP_TAGS = 25


def _bin_label(lo: int, hi: int | None) -> str:
    return f">={lo}" if hi is None else (f"<{hi}" if lo == 0 else f"{lo}-{hi - 1}")


def short_side_bins(resolution: int) -> list[tuple[int, int | None]]:
    """[(lo, hi)] ranges of the shorter side (px, hi exclusive, None = open) for a training resolution."""
    edges = [0] + [round(resolution * f) for f in SHORT_SIDE_EDGES] + [None]
    return list(zip(edges[:-1], edges[1:]))


def resolution_histogram(records: list[ImageRecord], resolution: int = 512) -> dict[str, int]:
    """Images per shorter-side range (px), the ranges scaled to the training resolution."""
    bins = short_side_bins(resolution)
    out = {_bin_label(lo, hi): 0 for lo, hi in bins}
    for rec in records:
        side = min(rec.size)
        lo, hi = next((lo, hi) for lo, hi in bins if hi is None or side < hi)
        out[_bin_label(lo, hi)] += 1
    return out


def caption_stats(records: list[ImageRecord], cfg: DataConfig, tokenizer) -> dict:
    transforms = caption_transforms(cfg)
    full = [transforms[r.source].full(r.caption) for r in records]
    counts = token_counts(tokenizer, full) if tokenizer is not None else [0] * len(full)
    long = [shown(r.path) for r, n in zip(records, counts) if n > MAX_CAPTION_TOKENS]
    origin = Counter(r.caption_from for r in records)
    return {
        "from_sidecar": origin["sidecar"], "from_metadata": origin["metadata"], "from_folder_name": origin["folder"],
        "from_prompt": origin["prompt"], "missing": origin["none"],
        "empty_files": sum(r.caption_empty_file for r in records),
        "too_long": len(long), "too_long_examples": long[:5],
        "max_tokens": max(counts, default=0),
    }


def duplicate_groups(records: list[ImageRecord]) -> list[list[str]]:
    by_digest: dict[str, list[str]] = {}
    for rec in records:
        by_digest.setdefault(rec.digest, []).append(shown(rec.path))
    return [paths for paths in by_digest.values() if len(paths) > 1]


def _warnings(report: dict, cfg: DataConfig, upscaled: int) -> list[str]:
    out, caps = [], report["captions"]
    by_reason = report["skipped_by_reason"]
    if by_reason:
        parts = ", ".join(f"{n} {code.replace('_', ' ')}" for code, n in by_reason.items())
        out.append(f"{counted(sum(by_reason.values()), 'file', 'files')} will be skipped ({parts}); see the list above")
    if upscaled:
        out.append(f"{counted(upscaled, 'image is smaller than its bucket', 'images are smaller than their bucket')} "
                   f"(resolution {cfg.resolution} px) and will be upscaled; set data.no_upscale to skip them instead")
    if caps["missing"]:
        out.append(f"{counted(caps['missing'], 'image has', 'images have')} no caption (no caption file, metadata "
                   "row, kohya folder name or prompt) and will train on an empty caption")
    if caps["empty_files"]:
        out.append(f"{counted(caps['empty_files'], 'caption is', 'captions are')} empty")
    if caps["too_long"]:
        out.append(f"{counted(caps['too_long'], 'caption is', 'captions are')} longer than {MAX_CAPTION_TOKENS} tokens "
                   f"and will be truncated at CLIP's 77-token limit (longest: {caps['max_tokens']} tokens)")
    dupes = sum(len(g) - 1 for g in report["duplicates"])
    if dupes:
        out.append(f"{counted(dupes, 'image is an exact duplicate', 'images are exact duplicates')} of other images "
                   "(same bytes); duplicates are seen more often in training")
    out.extend(mask_warnings(report.get("masks")))
    out.extend(report["notes"])
    if report["totals"]["usable"] == 0:
        out.append("no usable image: training would stop with an error")
    return out


def mask_warnings(masks: dict | None) -> list[str]:
    """Warnings about the masks (none when masks are off)."""
    if not masks:
        return []
    out = []
    if masks["missing"]:
        what = "no alpha channel" if masks["mode"] == "alpha" else "no mask file"
        out.append(f"{counted(masks['missing'], 'image has', 'images have')} {what} and will train on the whole image")
    if masks["mismatched"]:
        out.append(f"{counted(masks['mismatched'], 'mask differs', 'masks differ')} in size from its image: "
                   "training would stop with an error; save each mask at its image's size")
    if masks["bad"]:
        out.append(f"{counted(masks['bad'], 'mask file', 'mask files')} cannot be read: training would stop with an error")
    return out


def mask_lines(masks: dict | None) -> list[str]:
    """The masks part of the text report."""
    if not masks:
        return []
    lines = [f"masks ({masks['mode']}): {masks['found']} found, {masks['missing']} missing, "
             f"{masks['mismatched']} mismatched in size, {masks['bad']} unreadable"]
    lines += [f"  mask {m['mask']} is {m['mask_size'][0]}x{m['mask_size'][1]}, image {m['image']} is "
              f"{m['image_size'][0]}x{m['image_size'][1]}" for m in masks["mismatched_list"]]
    lines += [f"  mask {b['mask']}: {b['reason']}" for b in masks["bad_list"]]
    return lines


def source_rows(scans, cfg: DataConfig, too_small: set[str]) -> list[dict]:
    """Per source: counts, items per epoch, and the kohya folders read with their repeats."""
    return [{"path": shown(s.path), "role": cfg.sources[s.index].role, "images": len(s.records),
             "usable": sum(r.path not in too_small for r in s.records),
             "skipped": len(s.skipped) + sum(r.path in too_small for r in s.records),
             "items_per_epoch": sum(r.repeats for r in s.records if r.path not in too_small),
             "folders": s.folders} for s in scans]


def inspect_paths(paths: list[str] | None, cfg: DataConfig | None = None, *, caption_extension: str | None = None,
                  tokenizer=None) -> dict:
    """Report on `paths` (each a source with default options) or, when empty, on cfg.sources."""
    cfg = cfg or DataConfig()
    if paths:
        sources = [SourceConfig(path=str(p), caption_extension=caption_extension or ".txt") for p in paths]
        cfg = dataclasses.replace(cfg, sources=sources)
    if not cfg.sources:
        raise SdloraError("nothing to inspect: give one or more folders, or --config with [[data.sources]]")
    if tokenizer is None:
        from sdlora.models import load_tokenizer
        tokenizer = load_tokenizer()
    scans = [scan_source(s, i, max_pixels=cfg.max_image_pixels) for i, s in enumerate(cfg.sources)]
    records = [r for s in scans for r in s.records]
    kept, buckets, too_small, upscaled = apply_buckets(records, make_buckets(BucketSpec.from_config(cfg)),
                                                       cfg.no_upscale)
    skipped = [k for s in scans for k in s.skipped] + too_small
    report = {
        "settings": {"resolution": cfg.resolution, "buckets": cfg.buckets, "bucket_step": cfg.bucket_step,
                     "no_upscale": cfg.no_upscale, "max_image_pixels": cfg.max_image_pixels, "masks": cfg.masks},
        "sources": source_rows(scans, cfg, {k.path for k in too_small}),
        "totals": {"files": len(records) + sum(len(s.skipped) for s in scans), "usable": len(kept),
                   "skipped": len(skipped)},
        "skipped": [{"path": shown(k.path), "code": k.code, "reason": k.reason} for k in skipped],
        "skipped_by_reason": dict(Counter(k.code for k in skipped).most_common()),
        "resolutions": resolution_histogram(records, cfg.resolution),
        "buckets": dict(sorted(Counter(bucket_name(b) for b in buckets).items())),
        "upscaled": len(upscaled),
        "captions": caption_stats(kept, cfg, tokenizer),
        "top_tags": Counter(t for r in kept for t in split_tags(r.caption)).most_common(TOP_TAGS),
        "tag_frequency": tag_frequency((r.subset, r.caption) for r in kept),
        "duplicates": duplicate_groups(records),
        "notes": [f"{shown(s.path)}: {n}" for s in scans for n in s.notes],
        "masks": find_masks(scans, cfg).summary() if cfg.masks != "off" else None,
    }
    report["warnings"] = _warnings(report, cfg, len(upscaled))
    return report


def render_report(report: dict) -> str:
    """The report as plain text for a terminal."""
    t, caps = report["totals"], report["captions"]
    lines = [f"{t['files']} image files: {t['usable']} usable, {t['skipped']} skipped"]
    for s in report["sources"]:
        lines.append(f"  {s['path']} ({s['role']}): {s['usable']} usable, {s['skipped']} skipped, "
                     f"{s['items_per_epoch']} items per epoch with repeats")
        lines += [f"    kohya folder {name}: {f['repeats']} repeats x {counted(f['images'], 'image', 'images')}, "
                  f"caption {f['caption']!r}" for name, f in s["folders"].items()]
    if report["skipped"]:
        lines.append("skipped files:")
        lines += [f"  {k['path']}: {k['reason']}" for k in report["skipped"]]
    lines.append("shorter side (px): " + ", ".join(f"{k}: {v}" for k, v in report["resolutions"].items() if v))
    lines.append("buckets: " + (", ".join(f"{k}: {v}" for k, v in report["buckets"].items()) or "none"))
    lines.append(f"captions: {caps['from_sidecar']} caption files, {caps['from_metadata']} metadata rows, "
                 f"{caps['from_folder_name']} from folder names, {caps['from_prompt']} from the prompt, "
                 f"{caps['missing']} missing, {caps['empty_files']} empty, {caps['too_long']} too long")
    if report["top_tags"]:
        lines.append("top tags: " + ", ".join(f"{tag} ({n})" for tag, n in report["top_tags"]))
    for group in report["duplicates"]:
        lines.append("duplicates: " + " = ".join(group))
    lines += mask_lines(report.get("masks"))
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def run_inspect(paths: list[str], *, config: str | None = None, resolution: int | None = None,
                caption_extension: str | None = None, json_path: str | None = None, masks: str | None = None,
                mask_dir: str | None = None) -> str:
    """What `sdlora dataset inspect` does: build the settings, inspect, write JSON, return the text.
    `mask_dir` alone means masks = "folder"."""
    cfg = load_config(config).data if config else DataConfig()
    if mask_dir is not None:
        cfg.mask_dir, cfg.masks = mask_dir, masks or "folder"
    elif masks is not None:
        cfg.masks = masks
    if resolution is not None:
        if resolution <= 0 or resolution % 8:
            raise SdloraError(f"--resolution must be a positive multiple of 8, got {resolution}")
        cfg.resolution = resolution
    target = json_target(json_path) if json_path else None  # a bad --json fails before the scan
    report = inspect_paths(paths, cfg, caption_extension=caption_extension)
    text = render_report(report)
    if target is None:
        return text
    try:
        atomic_write_text(target, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise SdloraError(f"--json {shown(target)}: cannot write the report ({exc.strerror or exc})") from None
    return f"{text}\nfull report (JSON) written to {shown(target)}"


def json_target(path: str) -> Path:
    """The --json file as a Path, refused (one line) when its folder is missing or it is a folder."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise SdloraError(f"--json {shown(target)} is a folder: give a file name, e.g. {shown(target / 'report.json')}")
    if not target.parent.is_dir():
        raise SdloraError(f"--json {shown(target)}: the folder {shown(target.parent)} does not exist; create it first")
    return target
