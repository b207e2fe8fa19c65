"""`sdlora compare`: the same prompts and seeds with the base model and with each LoRA (at one or
several weights, or along one X/Y sweep: sdlora.evaluate.sweep), as a labelled grid, the individual
PNGs and a self-contained HTML report.

The model is loaded once and every LoRA attached once, as its own adapter; a column only sets the
adapters' multipliers. Weight 0 skips an adapter entirely, so the base column is the very same
pipeline with every multiplier at 0 (pixel-identical to the model without LoRA).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.evaluate.report import write_report
from sdlora.evaluate.sweep import Column, Sweep, sweep_columns, sweep_loras
from sdlora.fileio import atomic_write_text
from sdlora.generate.job import DEFAULT_MODEL, load_model, model_label, parameters, prepare_out_dir, slug
from sdlora.generate.loras import LoadedLora, LoraSpec, attach_loras, check_files, set_weights
from sdlora.generate.prediction import require_own_schedule
from sdlora.generate.pngmeta import format_parameters, save_png
from sdlora.generate.prompts import PromptSpec
from sdlora.generate.sampling import Sample, Sampler
from sdlora.imaging import labelled_grid
from sdlora.models import SDComponents

log = logging.getLogger(__name__)


@dataclass
class CompareJob:
    prompts: list[PromptSpec]
    loras: list[LoraSpec]
    out_dir: Path
    model: str = DEFAULT_MODEL
    weights: list[float] | None = None  # one column per LoRA per weight; None: each file's own weight
    num_images: int = 1  # seeds per prompt: one grid row each
    batch_size: int = 1
    dtype: str = "auto"
    device: str | None = None
    sweep: Sweep | None = None  # --sweep KIND=VALUES: the columns (weight: instead of `weights`)


@dataclass(frozen=True)
class Row:
    spec: PromptSpec
    seed: int

    @property
    def label(self) -> str:
        return f"{self.spec.prompt}  (seed {self.seed})"


@dataclass
class CompareResult:
    job: CompareJob
    model: str
    loras: list[LoadedLora]
    columns: list[Column]
    rows: list[Row]
    samples: list[list[Sample]]  # [row][column]
    image_paths: list[list[Path]]
    grid_path: Path
    extra: dict = field(default_factory=dict)


def lora_labels(paths: list[Path]) -> list[str]:
    """What a column calls each file: its stem, or `folder/stem` where stems collide (a run's final
    LoRA and its checkpoints share a stem: `run/portrait`, `step-000500/portrait`)."""
    stems = [Path(p).stem for p in paths]
    return [f"{Path(p).parent.name}/{stem}" if stems.count(stem) > 1 and Path(p).parent.name else stem
            for p, stem in zip(paths, stems)]


def make_columns(loaded: list[LoadedLora], weights: list[float] | None) -> list[Column]:
    """Base first, then each LoRA at each non-zero weight with the other LoRAs off."""
    off = {item.adapter: 0.0 for item in loaded}
    blocks = {item.adapter: item.spec.lbw for item in loaded}  # `FILE:W:lbw=...` block weights, kept
    columns = [Column("base", off)]  # with LoRAs attached at weight 0: the base model exactly
    for item, label in zip(loaded, lora_labels([item.spec.path for item in loaded])):
        for weight in (weights if weights is not None else [item.spec.weight]):
            if weight != 0:  # weight 0 is the base column
                columns.append(Column(f"{label} @ {weight:g}", {**off, item.adapter: float(weight)}, item.adapter,
                                      blocks))
    return columns


def make_rows(prompts: list[PromptSpec], num_images: int) -> list[Row]:
    return [Row(spec, spec.seed + i) for spec in prompts for i in range(num_images)]


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """One log line per finished prompt: images done of the total, elapsed time and an estimate of the rest."""

    def __init__(self, total: int):
        self.total, self.done, self.start = total, 0, time.monotonic()

    def advance(self, count: int, what: str) -> str:
        self.done += count
        elapsed = time.monotonic() - self.start
        left = elapsed / self.done * (self.total - self.done)
        line = (f"image {self.done}/{self.total} ({what}): {duration(elapsed)} so far"
                + (f", about {duration(left)} left" if self.done < self.total else ""))
        log.info("%s", line)
        return line


def sweep(sampler: Sampler, components: SDComponents, columns: list[Column], prompts: list[PromptSpec],
          num_images: int, batch_size: int) -> list[list[Sample]]:
    """Samples [row][column]; a column sets the multipliers once, then runs every prompt (up to
    `batch_size` images per pipeline call, across prompts sampled alike)."""
    by_column: list[list[Sample]] = []
    progress = Progress(len(columns) * len(prompts) * num_images)
    for column in columns:
        if column.weights:
            set_weights(components, column.weights, column.lbw)
        jobs = [(spec.replace(**column.settings), spec.seed + i) for spec in prompts for i in range(num_images)]
        by_column.append(sampler.many(jobs, batch_size, done=lambda batch, label=column.label: progress.advance(
            len(batch), f"{label}: {batch[-1].spec.prompt[:40]}")))
    return [list(row) for row in zip(*by_column)]


def image_name(row: int, column: int, sample: Sample) -> str:
    return f"r{row:02d}-c{column:02d}-{sample.seed}-{slug(sample.spec.prompt, 24)}.png"


def run_compare(job: CompareJob, components: SDComponents | None = None) -> CompareResult:
    """Generate the grid's images and write them with the grid; the report is written by the caller."""
    if not job.prompts:
        raise SdloraError("no prompts: give --prompt TEXT or --prompts FILE")
    if any(w < 0 for w in job.weights or []):
        raise SdloraError(f"--weights: LoRA weights must be >= 0, got {job.weights}")
    loras = job.loras + sweep_loras(job.sweep)
    if not loras and job.sweep is not None and job.sweep.kind in ("weight", "lbw"):
        raise SdloraError(f"--sweep {job.sweep.text}: give the LoRA to sweep with --lora FILE")
    check_files(loras)
    prepare_out_dir(job.out_dir)
    components = components or load_model(job.model, job.dtype, job.device)
    loaded = attach_loras(components, loras)
    require_own_schedule([(str(item.spec.path), item.metadata) for item in loaded], "compare")
    columns = sweep_columns(job.sweep, loaded) if job.sweep and job.sweep.kind in ("lbw", "sampler", "cfg") else \
        make_columns(loaded, list(job.sweep.values) if job.sweep and job.sweep.kind == "weight" else job.weights)
    rows = make_rows(job.prompts, job.num_images)
    samples = sweep(Sampler(components), components, columns, job.prompts, job.num_images, job.batch_size)
    label = model_label(components.source)
    paths = [[save_png(sample.image, job.out_dir / "images" / image_name(r, c, sample),
                       format_parameters(parameters(sample, label, loaded, columns[c].weights, columns[c].lbw)))
              for c, sample in enumerate(row)] for r, row in enumerate(samples)]
    grid = labelled_grid([[s.image for s in row] for row in samples], [r.label for r in rows],
                         [c.label for c in columns])
    grid_path = job.out_dir / "grid.png"
    grid.save(grid_path)
    return CompareResult(job, label, loaded, columns, rows, samples, paths, grid_path)


def summary(result: CompareResult) -> dict:
    """JSON-ready description of a comparison: settings, LoRA files, columns, rows and image paths."""
    out = result.job.out_dir
    return {
        "model": result.model,
        "loras": [{"name": item.adapter, "path": str(item.spec.path), "format": item.format, "hash": item.hash,
                   "modules": len(item.modules)} for item in result.loras],
        "sweep": result.job.sweep.text if result.job.sweep else None,
        "columns": [column_summary(c) for c in result.columns],
        "rows": [{"prompt": r.spec.prompt, "negative_prompt": r.spec.negative_prompt, "seed": r.seed,
                  "steps": r.spec.steps, "cfg": r.spec.cfg, "size": [r.spec.width, r.spec.height],
                  "scheduler": r.spec.scheduler} for r in result.rows],
        "grid": str(result.grid_path.relative_to(out)),
        "images": [[str(p.relative_to(out)) for p in row] for row in result.image_paths],
    }


def column_summary(column: Column) -> dict:
    from sdlora.generate.blocks import label

    out = {"label": column.label, "lora": column.lora, "weights": column.weights}
    blocks = {a: label(v) for a, v in (column.lbw or {}).items() if v is not None and column.weights.get(a)}
    return {**out, **({"lbw": blocks} if blocks else {}), **({"settings": column.settings} if column.settings else {})}


def write_json(path: Path, data: dict) -> Path:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def compare(job: CompareJob, components: SDComponents | None = None) -> CompareResult:
    """`sdlora compare`: grid.png, images/*.png, compare.json and report.html in job.out_dir."""
    result = run_compare(job, components)
    data = summary(result)
    result.extra["json"] = write_json(job.out_dir / "compare.json", data)
    notes = [f"X/Y sweep {job.sweep.text}: one column per value, the same seeds in every column"] if job.sweep else None
    result.extra["report"] = write_report(job.out_dir / "report.html", result, title="sdlora compare", notes=notes)
    return result
