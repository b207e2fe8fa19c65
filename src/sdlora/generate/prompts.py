"""What to generate: one `PromptSpec` per prompt, from the command line or a prompt file.

A prompt file has one prompt per line, with optional per-line settings in kohya's sample-prompt
syntax (the one kohya's trainer and most LoRA users already write):

    a cat sitting on a chair --n blurry, lowres --d 42 --s 30 --l 7.5 --w 512 --h 512 --ss euler_a

Blank lines and lines starting with `#` are skipped. Unlike kohya, an unknown option is an error
naming the file and line (a typo such as `--seed 42` would otherwise silently be ignored).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from sdlora.errors import SdloraError

log = logging.getLogger(__name__)
SEED_MAX = 2**32 - 1  # A1111's and kohya's seed range

# Option letter -> (PromptSpec field, type). kohya's names, so existing prompt files work unchanged.
OPTIONS: dict[str, tuple[str, type]] = {
    "n": ("negative_prompt", str),
    "d": ("seed", int),
    "s": ("steps", int),
    "l": ("cfg", float),
    "w": ("width", int),
    "h": ("height", int),
    "ss": ("scheduler", str),
}

# ` --x value` where x is a run of letters; the value runs up to the next ` --letter`.
_OPTION = re.compile(r"\s--([A-Za-z]+)(?=\s|$)")


@dataclass(frozen=True)
class PromptSpec:
    """One prompt and the settings it is sampled with. `seed` is the first image's seed; image i of
    a batch uses seed + i, so any single image can be regenerated on its own."""

    prompt: str
    negative_prompt: str = ""
    seed: int = 42
    steps: int = 30
    cfg: float = 7.5
    width: int = 512
    height: int = 512
    scheduler: str = "pndm"

    def replace(self, **changes) -> "PromptSpec":
        return dataclasses.replace(self, **changes)


def check_spec(spec: PromptSpec, where: str = "prompt") -> PromptSpec:
    """Raise SdloraError (naming `where`) for settings SD cannot sample with; return `spec`."""
    from sdlora.generate.schedulers import check_scheduler_name

    for name in ("width", "height"):
        value = getattr(spec, name)
        if value <= 0 or value % 8:
            nearest = max(8, round(value / 8) * 8)
            raise SdloraError(f"{where}: {name} {value} is not a positive multiple of 8 (the VAE works "
                              f"on 8x8 pixel blocks); use e.g. {nearest}")
    if spec.steps < 1:
        raise SdloraError(f"{where}: steps must be at least 1, got {spec.steps}")
    if not 0 <= spec.seed <= SEED_MAX:
        raise SdloraError(f"{where}: seed must be from 0 to {SEED_MAX}, got {spec.seed}")
    if not math.isfinite(spec.cfg) or spec.cfg < 0:
        raise SdloraError(f"{where}: guidance (CFG) must be a finite number >= 0, got {spec.cfg}")
    check_scheduler_name(spec.scheduler, where)
    return spec


def parse_prompt_line(line: str, defaults: PromptSpec | None = None, where: str = "prompt") -> PromptSpec:
    """`a cat --n blurry --d 42` -> PromptSpec; settings not on the line come from `defaults`."""
    base = defaults or PromptSpec(prompt="")
    parts = _OPTION.split(" " + line.strip())
    # split() with one capture group gives [prompt, name1, value1, name2, value2, ...]
    prompt, pairs = parts[0].strip(), list(zip(parts[1::2], parts[2::2]))
    if not prompt:
        raise SdloraError(f"{where}: the prompt text is empty")
    changes: dict[str, object] = {"prompt": prompt}
    for name, raw in pairs:
        if name not in OPTIONS:
            known = ", ".join(f"--{k}" for k in OPTIONS)
            raise SdloraError(f"{where}: unknown option --{name} (known: {known})")
        field, kind = OPTIONS[name]
        changes[field] = _convert(raw.strip(), kind, f"{where}: --{name}")
    return check_spec(base.replace(**changes), where)


def _convert(raw: str, kind: type, where: str):
    if kind is str:
        return raw
    try:
        return kind(raw)
    except ValueError:
        raise SdloraError(f"{where} expects {'an integer' if kind is int else 'a number'}, got {raw!r}") from None


def read_prompt_file(path: str | Path, defaults: PromptSpec | None = None) -> list[PromptSpec]:
    """Every prompt line of `path` (UTF-8) as a PromptSpec; errors name the file and line number."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SdloraError(f"{path}: prompt file not found") from None
    except IsADirectoryError:
        raise SdloraError(f"{path}: is a folder; --prompts takes a text file with one prompt per line") from None
    except UnicodeDecodeError:
        raise SdloraError(f"{path}: prompt file is not UTF-8 text") from None
    specs = [parse_prompt_line(text, defaults, f"{path}:{number}")
             for number, text in enumerate(lines, start=1)
             if text.strip() and not text.lstrip().startswith("#")]
    if not specs:
        raise SdloraError(f"{path}: no prompts found (one prompt per line; `#` starts a comment)")
    return specs


def collect_prompts(texts: list[str] | None, prompt_file: str | Path | None, defaults: PromptSpec) -> list[PromptSpec]:
    """The prompts of a run: each `--prompt` text (same syntax as a file line), then the file's lines."""
    specs = [parse_prompt_line(text, defaults, f"--prompt {text!r}") for text in texts or []]
    if prompt_file is not None:
        specs += read_prompt_file(prompt_file, defaults)
    if not specs:
        raise SdloraError("no prompts: give --prompt TEXT (repeatable) or --prompts FILE")
    for spec in specs:
        if (spec.width, spec.height) != (defaults.width, defaults.height):
            log.info("%r is sampled at %dx%d: its own --w/--h override the command line's %dx%d",
                     spec.prompt, spec.width, spec.height, defaults.width, defaults.height)
    return specs
