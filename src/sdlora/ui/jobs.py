"""The Compare, Generate and Files tabs' work: form values -> the same job objects the CLI builds ->
one library call each (sdlora.generate, sdlora.evaluate, sdlora.formats). Results come back as
paths and plain data; the page renders them (escaped) in `sdlora.ui.html`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sdlora.dtypes import SHORT_NAMES as DTYPES  # noqa: F401 (the dtype choices the forms offer)
from sdlora.errors import SdloraError
from sdlora.generate.loras import LoraSpec, parse_lora_arg
from sdlora.generate.prompts import PromptSpec, check_spec, collect_prompts



@dataclass
class Sampling:
    """What the Generate and Compare forms share (the CLI's common flags)."""

    model: str
    prompts: str  # one prompt per line, kohya options allowed (`--n`, `--d`, ...)
    prompt_file: str = ""
    negative: str = ""
    seed: int = 42
    steps: int = 30
    cfg: float = 7.5
    width: int = 512
    height: int = 512
    scheduler: str = "pndm"
    num_images: int = 1
    loras: str = ""  # one `FILE[:WEIGHT]` per line
    out_dir: str = "outputs"

    def specs(self) -> list[PromptSpec]:
        defaults = check_spec(PromptSpec("", self.negative, int(self.seed), int(self.steps), float(self.cfg),
                                         int(self.width), int(self.height), self.scheduler), "the form")
        lines = [line for line in self.prompts.splitlines() if line.strip()]
        return collect_prompts(lines, self.prompt_file.strip() or None, defaults)

    def lora_specs(self) -> list[LoraSpec]:
        return parse_loras(self.loras)


def parse_loras(text: str) -> list[LoraSpec]:
    """One `FILE[:WEIGHT]` per line (the CLI's --lora syntax)."""
    specs = [parse_lora_arg(line.strip()) for line in text.splitlines() if line.strip()]
    for spec in specs:
        if not spec.path.is_file():
            raise SdloraError(f"LoRA file {spec.path} not found")
    return specs


def parse_weights(text: str) -> list[float] | None:
    """`0, 0.5, 1` -> [0.0, 0.5, 1.0]; empty -> None (each file's own weight)."""
    try:
        values = [float(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise SdloraError(f"weights: expected numbers such as 0, 0.5, 1, got {text!r}") from None
    return values or None


@dataclass
class Generated:
    images: list[Path]
    parameters: list[str] = field(default_factory=list)


def generate(form: Sampling) -> Generated:
    from sdlora.generate.job import GenerateJob, generate as run
    from sdlora.generate.pngmeta import PNG_KEY
    from PIL import Image

    job = GenerateJob(form.specs(), Path(form.out_dir), form.model, form.lora_specs(), int(form.num_images))
    result = run(job)
    texts = []
    for path in result.images:
        with Image.open(path) as image:
            texts.append(image.text.get(PNG_KEY, ""))
    return Generated(result.images, texts)


@dataclass
class Compared:
    grid: Path
    report: Path
    metrics: dict | None = None  # {column: {metric: value}}
    notes: list[str] = field(default_factory=list)


def compare(form: Sampling, weights: str = "", evaluate: bool = False, train_images: str = "") -> Compared:
    """`sdlora compare` (or `sdlora evaluate` with metrics) on the form's values."""
    from sdlora.evaluate.compare import CompareJob, compare as run_compare

    loras = form.lora_specs()
    if not loras:
        raise SdloraError("compare: add at least one LoRA file (or a run's checkpoints)")
    job = CompareJob(form.specs(), loras, Path(form.out_dir), form.model, parse_weights(weights),
                     int(form.num_images))
    hints = missing_encoders() if evaluate else []
    if not evaluate or len(hints) == 2:  # no encoder at all: the grid and report alone, with the hint
        result = run_compare(job)
        return Compared(result.grid_path, result.extra["report"], None, hints)
    from sdlora.evaluate.evaluation import EvaluateJob, evaluate as run_evaluate

    result = run_evaluate(EvaluateJob(job, Path(train_images) if train_images.strip() else None))
    return Compared(result.compare.grid_path, result.report_path, result.metrics.get("columns"), result.notes)


def missing_encoders() -> list[str]:
    """The download hint for each evaluation encoder (CLIP, DINO) whose weights are not on this machine."""
    from sdlora.evaluate.features import DEFAULT_CLIP, DEFAULT_DINO, MissingWeights, local_folder

    hints = []
    for name, what, flag in ((DEFAULT_CLIP, "CLIP", "--clip-model"), (DEFAULT_DINO, "DINO", "--dino-model")):
        try:
            local_folder(name, what, flag)
        except MissingWeights as exc:
            hints.append(f"{exc}; metrics need it (showing the grid without them)")
    return hints


def read_png(path: str | Path) -> str:
    """A generated PNG's A1111 parameters, as text."""
    from sdlora.generate.pngmeta import format_parameters, read_parameters

    return format_parameters(read_parameters(path))


def lora_info(path: str) -> dict:
    from sdlora.formats.info import describe

    return describe(_existing(path))


def convert(src: str, dst: str, fmt: str, dtype: str | None = None) -> str:
    from sdlora.formats import convert_lora_file

    src_fmt, out_fmt = convert_lora_file(_existing(src), _output(dst), fmt, dtype=_dtype(dtype))
    return f"converted {src} ({src_fmt}) -> {dst} ({out_fmt})"


def resize(src: str, dst: str, rank: int, conv_rank: int | None = None):
    """The ResizeReport (retained energy overall and per module)."""
    from sdlora.formats.resize import resize_lora_file

    return resize_lora_file(_existing(src), _output(dst), int(rank), conv_rank=conv_rank)


def merge(base: str, loras: str, out: str, dtype: str | None = None, overwrite: bool = False) -> dict:
    from sdlora.formats.merge_model import merge_into_model

    specs = parse_loras(loras)
    if not specs:
        raise SdloraError("merge: add at least one LoRA file")
    return merge_into_model(base, [(s.path, s.weight) for s in specs], _output(out), dtype=dtype or None,
                            overwrite=overwrite)


def _existing(path: str) -> str:
    if not path or not Path(path).is_file():
        raise SdloraError(f"file {path!r} not found")
    return path


def _output(path: str) -> str:
    if not path or not path.strip():
        raise SdloraError("give an output path")
    return path.strip()


def _dtype(name: str | None):
    if not name:
        return None
    from sdlora.dtypes import parse_dtype

    return parse_dtype(name, "dtype")
