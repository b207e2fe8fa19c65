"""X/Y sweeps for `sdlora compare --sweep KIND=VALUES`: rows are the prompts (and seeds), the
columns one sweep of a single setting, base column first.

    weight=0,0.4,0.7,1.0      each LoRA at each weight
    checkpoint=RUN_DIR        the run's checkpoints/step-*/ LoRA files in step order, then its final file
    lora=A.safetensors,B...   one column per file (FILE[:WEIGHT] each)
    lbw=OUTALL,INALL          each LoRA at its weight with each block-weight preset
                              (numeric vectors separated by `;`: lbw=1,0,...;0,1,...)
    sampler=euler_a,ddim      every column with the LoRAs at their weights, one sampler each
    cfg=4,7.5,10              likewise, one guidance scale each

A sweep only builds columns: the model, the prompts and the seeds are the same in every column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from sdlora.errors import SdloraError

KINDS = ("weight", "checkpoint", "lora", "lbw", "sampler", "cfg")


@dataclass(frozen=True)
class Column:
    label: str
    weights: dict[str, float]  # every attached adapter -> its multiplier in this column
    lora: str | None = None  # the adapter this column shows (None: base, or every LoRA)
    lbw: dict[str, tuple[float, ...] | None] | None = None  # adapter -> 26 block weights (None: all 1)
    settings: dict[str, object] = field(default_factory=dict)  # PromptSpec fields this column overrides


@dataclass(frozen=True)
class Sweep:
    kind: str
    values: tuple  # weights (float), LoraSpecs, 26-value block vectors, scheduler names or CFG scales
    text: str = ""  # as given, for labels and the report


def parse_sweep(text: str) -> Sweep:
    """`KIND=VALUES` -> Sweep; SdloraError (one line, naming --sweep) for anything it cannot use."""
    kind, sep, rest = text.partition("=")
    kind = kind.strip().lower()
    where = f"--sweep {text}"
    if not sep or kind not in KINDS:
        raise SdloraError(f"{where}: expected KIND=VALUES with KIND one of {', '.join(KINDS)}")
    if not rest.strip():
        raise SdloraError(f"{where}: no values after {kind}=")
    return Sweep(kind, PARSERS[kind](rest, where), text)


def _numbers(text: str, where: str, what: str) -> tuple[float, ...]:
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise SdloraError(f"{where}: {part.strip()!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise SdloraError(f"{where}: {what} must be finite numbers >= 0, got {part.strip()}")
        values.append(value)
    return tuple(values)


def _weights(text: str, where: str) -> tuple[float, ...]:
    from sdlora.lora.adapter import check_multiplier

    return tuple(check_multiplier(w, f"{where}: LoRA weight") for w in _numbers(text, where, "LoRA weights"))


def _cfg(text: str, where: str) -> tuple[float, ...]:
    return _numbers(text, where, "guidance scales")


def _loras(text: str, where: str) -> tuple:
    from sdlora.generate.loras import parse_lora_arg

    return tuple(parse_lora_arg(part.strip()) for part in text.split(",") if part.strip())


def _lbw(text: str, where: str) -> tuple[tuple[float, ...], ...]:
    from sdlora.generate.blocks import parse_lbw

    parts = text.split(";") if ";" in text else text.split(",")
    return tuple(parse_lbw(part, where) for part in parts if part.strip())


def _samplers(text: str, where: str) -> tuple[str, ...]:
    from sdlora.generate.schedulers import SCHEDULERS

    names = tuple(part.strip() for part in text.split(",") if part.strip())
    for name in names:
        if name not in SCHEDULERS:
            raise SdloraError(f"{where}: unknown sampler {name!r}; choose from {', '.join(SCHEDULERS)}")
    return names


def _checkpoint(text: str, where: str) -> tuple:
    from sdlora.generate.loras import LoraSpec

    return tuple(LoraSpec(path) for path in run_files(Path(text.strip()), where))


PARSERS = {"weight": _weights, "checkpoint": _checkpoint, "lora": _loras, "lbw": _lbw, "sampler": _samplers,
           "cfg": _cfg}


def _main_file(folder: Path) -> Path | None:
    """A folder's LoRA file in the run's first format (`name.safetensors`, not `name.diffusers.safetensors`
    nor the EMA's `name-ema.safetensors`)."""
    from sdlora.train.ema import EMA_SUFFIX

    files = {p for p in folder.glob("*.safetensors") if p.is_file() and "." not in p.stem}
    files = sorted(p for p in files if not (p.stem.endswith(EMA_SUFFIX)
                                            and p.with_name(p.stem[:-len(EMA_SUFFIX)] + p.suffix) in files))
    return files[0] if files else None


def run_files(run_dir: Path, where: str = "--sweep checkpoint") -> list[Path]:
    """A training run's LoRA files: checkpoints/step-*/ in step order, then the final file if written."""
    from sdlora.train.checkpoint import CHECKPOINTS, find_checkpoints

    if not run_dir.is_dir():
        raise SdloraError(f"{where}: {run_dir} is not a folder (give a training run's output folder)")
    files = [f for f in (_main_file(c.path) for c in find_checkpoints(run_dir)) if f is not None]
    final = _main_file(run_dir)
    files += [final] if final is not None else []
    if not files:
        raise SdloraError(f"{where}: {run_dir} holds no LoRA files (expected {CHECKPOINTS}/step-N/*.safetensors "
                          "or a final *.safetensors)")
    return files


def sweep_loras(sweep: Sweep | None) -> list:
    """The LoRA files a checkpoint or lora sweep adds to the comparison (one column each)."""
    return list(sweep.values) if sweep is not None and sweep.kind in ("checkpoint", "lora") else []


def sweep_columns(sweep: Sweep, loaded: list) -> list[Column]:
    """Columns of an lbw, sampler or cfg sweep: base first (no LoRA, the command line's sampler and CFG),
    then one column per value with every LoRA at its own weight."""
    from sdlora.generate.blocks import label

    off = {item.adapter: 0.0 for item in loaded}
    on = {item.adapter: item.spec.weight for item in loaded}
    own = {item.adapter: item.spec.lbw for item in loaded}
    columns = [Column("base", off)]
    for value in sweep.values:
        if sweep.kind == "lbw":
            columns.append(Column(f"lbw {label(value)}", on, None, {adapter: value for adapter in on}))
        elif sweep.kind == "sampler":
            columns.append(Column(str(value), on, None, own, {"scheduler": value}))
        elif sweep.kind == "cfg":
            columns.append(Column(f"cfg {value:g}", on, None, own, {"cfg": value}))
        else:
            raise SdloraError(f"--sweep {sweep.text}: {sweep.kind} sweeps are columns of LoRA files or weights")
    return columns
