"""What a run folder says about its run: progress, curves, samples, log tail and end summary.

Read from the files the trainer writes (train.log, samples/, checkpoints/, the LoRA files) and the
UI's pid file, so it works for runs started from the CLI too, and after a reload or a restart.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sdlora.train.checkpoint import CHECKPOINTS
from sdlora.train.progress import LOG_FILE
from sdlora.train.validation import SAMPLES
from sdlora.ui.runner import CONFIG, CONSOLE, running_pid

STEP = re.compile(r"step (\d+): loss (\S+) \(smoothed (\S+)\), lr (\S+?)(?:,|$)(?:.*?, ([\d.]+) it/s)?")
VALIDATION = re.compile(r"step (\d+): validation loss (\S+)")
TOTAL = re.compile(r"(?:; | modules?, )([\d,]+) steps?\b")  # the trainer's start summary (train.progress)
DONE = re.compile(r"INFO (done: .*)")
INTERRUPTED = re.compile(r"interrupted at step (\d+)")
WARNING = re.compile(r"WARNING (.*)")
ERROR = re.compile(r"^sdlora: error: (.*)$", re.M)
TAIL = 30


@dataclass
class RunView:
    run_dir: Path
    status: str = "not started"  # running, finished, stopped, failed, not started
    step: int = 0
    total: int | None = None
    rate: float | None = None  # it/s of the latest logged step
    losses: list[tuple[int, float, float, float]] = field(default_factory=list)  # step, loss, smoothed, lr
    validation: list[tuple[int, float]] = field(default_factory=list)
    samples: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    log_tail: str = ""

    @property
    def eta_seconds(self) -> float | None:
        if self.total is None or not self.rate or self.status != "running":
            return None
        return max(0, self.total - self.step) / self.rate

    def progress_text(self) -> str:
        total = f"/{self.total}" if self.total else ""
        rate = f", {self.rate:.2f} it/s" if self.rate else ""
        eta = f", ETA {format_seconds(self.eta_seconds)}" if self.eta_seconds is not None else ""
        return f"{self.status}: step {self.step}{total}{rate}{eta}"


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def parse_log(view: RunView, text: str) -> None:
    """Fill progress, curves and the summary from train.log (appended to on resume)."""
    for line in text.splitlines():
        if m := STEP.search(line):
            step = int(m[1])
            view.losses = [row for row in view.losses if row[0] < step]  # a resume repeats no step, but be safe
            view.losses.append((step, float(m[2]), float(m[3]), float(m[4])))
            view.step, view.rate = step, float(m[5]) if m[5] else view.rate
        elif m := VALIDATION.search(line):
            view.validation.append((int(m[1]), float(m[2])))
        elif m := TOTAL.search(line):
            view.total, view.summary = int(m[1].replace(",", "")), []
        elif m := INTERRUPTED.search(line):
            view.step, view.status = int(m[1]), "stopped"
            view.summary = [f"stopped at step {m[1]}: Resume continues from its checkpoint"]
        elif m := DONE.search(line):
            view.status = "finished"
            view.summary.append(m[1])
        elif m := WARNING.search(line):
            view.summary.append(m[1])


def read_run(run_dir: str | Path) -> RunView:
    run_dir = Path(run_dir)
    view = RunView(run_dir)
    log = _read(run_dir / LOG_FILE)
    parse_log(view, log)
    view.samples = sorted((run_dir / SAMPLES).glob("step-*.png"))
    view.files = sorted(run_dir.glob("*.safetensors")) + sorted((run_dir / CHECKPOINTS).glob("step-*/*.safetensors"))
    console = _read(run_dir / CONSOLE)
    if running_pid(run_dir):
        view.status = "running"
    elif errors := ERROR.findall(console):
        if view.status != "finished":
            view.status, view.summary = "failed", [f"error: {errors[-1]}"]
    elif view.status == "not started" and (log or console):
        view.status = "stopped"
    view.log_tail = "\n".join((log or console).splitlines()[-TAIL:])
    return view


def list_runs(root: str | Path) -> list[Path]:
    """Run folders under `root` (and `root` itself): those with a config.toml or a train.log."""
    root = Path(root)
    if not root.is_dir():
        return []
    candidates = [root] + sorted(p for p in root.iterdir() if p.is_dir())
    return [p for p in candidates if (p / CONFIG).is_file() or (p / LOG_FILE).is_file()]


def sample_label(path: Path) -> str:
    """`step-000000-base.png` -> `base model (step 0)`; `step-000040.png` -> `step 40`."""
    stem = path.stem
    step = int(stem.split("-")[1])
    return f"base model (step {step})" if stem.endswith("-base") else f"step {step}"


def checkpoint_loras(run_dir: str | Path) -> list[Path]:
    """The run's LoRA files, final first, then its checkpoints newest first (for Compare)."""
    run_dir = Path(run_dir)
    from sdlora.formats.embeddings import STANDALONE_SUFFIX  # <name>.emb.safetensors: an embedding, not a LoRA

    final = sorted(p for p in run_dir.glob("*.safetensors") if not p.name.endswith(STANDALONE_SUFFIX))
    steps = sorted((run_dir / CHECKPOINTS).glob("step-*/*.safetensors"), reverse=True)
    return final + [p for p in steps if ".diffusers." not in p.name and ".native." not in p.name
                    and not p.name.endswith(STANDALONE_SUFFIX)]
