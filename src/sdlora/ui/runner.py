"""Training runs as separate processes: Start, Stop (SIGINT, as Ctrl-C: the trainer saves a
checkpoint) and Resume (`--resume RUN`). The run folder is the state: `config.toml` (written before
the start), `ui-train.pid` and `ui-console.log` (the trainer's console), so a reloaded page or a
restarted `sdlora ui` finds running and finished runs again.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sdlora.config import RunConfig, to_toml
from sdlora.errors import SdloraError
from sdlora.fileio import atomic_write_text
from sdlora.train.checkpoint import CHECKPOINTS

PID_FILE = "ui-train.pid"
CONSOLE = "ui-console.log"
CONFIG = "config.toml"
_children: dict[int, subprocess.Popen] = {}  # processes this server started (reaped on poll)


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(")")[-1].split()[0] == "Z")


def running_pid(run_dir: str | Path) -> int | None:
    """The pid of this run's trainer when it is still running."""
    pid_file = Path(run_dir) / PID_FILE
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _launch(run_dir: Path, args: list[str]) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(run_dir / CONSOLE, "ab") as console:
        child = subprocess.Popen([sys.executable, "-m", "sdlora", "train", *args], stdout=console,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                 start_new_session=True)  # survives a restart of the UI
    _children[child.pid] = child
    atomic_write_text(run_dir / PID_FILE, f"{child.pid}\n")
    return child.pid


def start(cfg: RunConfig) -> Path:
    """Write RUN/config.toml and start `sdlora train --config` on it; never over an existing run."""
    run_dir = Path(cfg.save.output_dir)
    if running_pid(run_dir):
        raise SdloraError(f"{run_dir}: a run is already training there; Stop it first")
    if (run_dir / CHECKPOINTS).is_dir() and any((run_dir / CHECKPOINTS).iterdir()):
        raise SdloraError(f"{run_dir} already holds a run with checkpoints: Resume it, or change save.output_dir")
    if not cfg.data.sources:
        raise SdloraError("no training images: add image folders on the Dataset tab")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG, to_toml(cfg))
    _launch(run_dir, ["--config", str(run_dir / CONFIG)])
    return run_dir


def resume(run_dir: str | Path) -> Path:
    """Continue a stopped run from its newest checkpoint (`sdlora train --resume RUN`)."""
    run_dir = Path(run_dir)
    if running_pid(run_dir):
        raise SdloraError(f"{run_dir}: the run is still training")
    if not (run_dir / CONFIG).is_file():
        raise SdloraError(f"{run_dir}: no {CONFIG}; open a run folder that sdlora trained")
    if not (run_dir / CHECKPOINTS).is_dir():
        raise SdloraError(f"{run_dir}: no checkpoint to resume from yet (it is written when a run is stopped)")
    _launch(run_dir, ["--resume", str(run_dir)])
    return run_dir


def stop(run_dir: str | Path) -> int:
    """Ask the trainer to stop as Ctrl-C does (it finishes the step and saves a checkpoint)."""
    pid = running_pid(run_dir)
    if pid is None:
        raise SdloraError(f"{run_dir}: no run is training there")
    os.kill(pid, signal.SIGINT)
    return pid
