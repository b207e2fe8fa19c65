"""From command-line pieces to a resolved RunConfig and a training run (what `sdlora train` calls).

Precedence, lowest first: defaults < the run folder's config.toml (when resuming without --config)
< --config FILE < explicit flags (--steps, --lr, ...) < --set KEY=VALUE. Each --data PATH adds a
[[data.sources]] table; when resuming from the run folder's config, the --data folders are the
sources (they replace the saved ones rather than adding to them), so running the same command again
with --resume continues the same run. Whether the result may continue the checkpoint is decided
by sdlora.train.resume when the run is built.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sdlora.config import RunConfig, load_config, read_toml
from sdlora.errors import SdloraError
from sdlora.train.checkpoint import CHECKPOINTS
from sdlora.train.build import CONFIG_FILE
from sdlora.train.loop import TrainResult, train


def run_config_file(resume: str, output_dir: str | None) -> Path | None:
    """The config.toml of the run being resumed (resume: latest, a run folder or a checkpoint folder)."""
    target = Path(output_dir) if resume == "latest" and output_dir else Path(resume)
    for folder in (target, target.parent.parent if target.parent.name == CHECKPOINTS else None):
        if folder is not None and (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    return None


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def resolve_config(config: str | None = None, sets: Sequence[str] = (), flags: Mapping[str, Any] | None = None,
                   data: Sequence[str] = (), resume: str | None = None) -> RunConfig:
    """The RunConfig for one `sdlora train` invocation (flags: {dotted key: value}, None values ignored)."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    base: dict = {}
    if config is None and resume:
        if resume == "latest" and "save.output_dir" not in flags:
            raise SdloraError("--resume latest needs --output RUN_DIR (the run folder whose newest checkpoint "
                              "to continue), or give the run folder itself: --resume RUN_DIR")
        target = flags["save.output_dir"] if resume == "latest" else resume
        if not Path(target).is_dir():
            raise SdloraError(f"--resume {resume}: the run folder {target} does not exist")
        saved = run_config_file(resume, flags.get("save.output_dir"))
        if saved is None and resume != "latest":
            raise SdloraError(f"--resume {resume}: no {CONFIG_FILE} found there; pass --config too")
        base = read_toml(saved) if saved else {}
        if saved and "save.output_dir" not in flags and resume != "latest":
            flags["save.output_dir"] = str(saved.parent)
        if data and saved:
            base.setdefault("data", {})["sources"] = []  # the command's --data are the run's sources
    elif config is not None:
        base = read_toml(config)
    for key, value in flags.items():
        _set(base, key, value)
    if data:
        sources = base.setdefault("data", {}).setdefault("sources", [])
        sources.extend({"path": str(p)} for p in data)
    return load_config(None, list(sets), base=base)


def run(config: str | None = None, sets: Sequence[str] = (), flags: Mapping[str, Any] | None = None,
        data: Sequence[str] = (), resume: str | None = None) -> TrainResult:
    cfg = resolve_config(config, sets, flags, data, resume)
    if not cfg.data.sources:
        raise SdloraError("no training images: pass --data FOLDER (repeatable) or [[data.sources]] in --config")
    try:
        return train(cfg, resume=resume)
    except OSError as exc:  # disk full, read-only or vanished folder while writing outputs
        where = exc.filename or cfg.save.output_dir
        raise SdloraError(f"{where}: {exc.strerror or exc}; the run's last checkpoint is kept (fix this, then "
                          f"continue with --resume {cfg.save.output_dir})") from None
