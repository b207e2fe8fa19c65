"""Resuming a run: which settings may change, and the checks made before anything in the run folder changes.

A resumed run continues exactly (bitwise, on the same hardware) when everything that shapes the next
step is unchanged: the data, the LoRA, the optimizer, the seed, the batch, precision, resolution...
Only the settings in CHANGEABLE_ON_RESUME may differ from the checkpoint's own config: how long to
train, how often to save, sample and log, what the outputs are called, and how fast the UNet runs.
Everything else is refused, naming the key with the old and the new value.
"""
from __future__ import annotations

from typing import Any

from sdlora.config import RunConfig, from_dict, to_dict
from sdlora.errors import SdloraError
from sdlora.train import checkpoint as ckpt

# key (or `section.` prefix) -> why changing it on resume leaves the training itself as it was
CHANGEABLE_ON_RESUME: dict[str, str] = {
    "train.steps": "how long to train (a longer run continues; the LR schedule's length follows it)",
    "train.epochs": "how long to train",
    "train.max_nonfinite_steps": "when to give up on NaN/inf losses",
    "train.gradient_checkpointing": "memory vs speed; the same gradients",
    "train.channels_last": "memory layout of the UNet",
    "train.compile": "torch.compile of the UNet",
    "train.compile_backend": "torch.compile backend",
    "train.conv_backend": "CPU convolution kernels (fp32 rounding only)",
    "train.low_memory": "memory vs speed of the CPU step; the same gradients",
    "data.num_workers": "how many processes decode images",
    "save.": "where, how often and in which formats files are written",
    "validation.": "samples and validation loss use their own seeds, not the training draws",
    "log.": "what is reported",
    "ema.use_for_samples": "which weights the sample grids use (the average itself is unchanged)",
    "embeddings.bundle": "where the trained embeddings are written",
    "embeddings.standalone": "where the trained embeddings are written",
}
RESUME_STATE_KEYS = ("version", "step", "stream", "lora", "optimizer", "scheduler", "guard", "rng", "config")


def changeable(key: str) -> bool:
    """True when dotted `key` may differ between a checkpoint's config and the resuming one."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in CHANGEABLE_ON_RESUME)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists (of tables too) stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def resume_conflicts(saved: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """(key, saved value, new value) for every setting that differs and may not change on resume.

    `saved` and `new` are full config trees as dicts (`to_dict(RunConfig)`)."""
    old, cur = flatten(saved), flatten(new)
    return [(key, old.get(key), cur.get(key)) for key in sorted(old.keys() | cur.keys())
            if old.get(key) != cur.get(key) and not changeable(key)]


def _show(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        value = [{k: v for k, v in item.items() if v not in (None, "")} for item in value]
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."


def check_resumable(saved: RunConfig, cfg: RunConfig, where: str) -> None:
    """SdloraError naming the first setting that cannot change (and how many more), else nothing."""
    conflicts = resume_conflicts(to_dict(saved), to_dict(cfg))
    if not conflicts:
        return
    key, old, new = conflicts[0]
    more = f" (also {', '.join(k for k, _, _ in conflicts[1:])})" if conflicts[1:] else ""
    raise SdloraError(f"--resume {where}: {key} cannot change when resuming (the run has {_show(old)}, this "
                      f"command gives {_show(new)}){more}; resume with the run's own settings, or start a new "
                      "run with another --output")


def saved_config(state: dict, where: str) -> RunConfig:
    """The config a checkpoint was trained with (stored in its state)."""
    from sdlora.config import tomllib

    try:
        return from_dict(RunConfig, tomllib.loads(state["config"]))
    except (tomllib.TOMLDecodeError, SdloraError, TypeError) as exc:
        raise SdloraError(f"{where}: the training state's config is unreadable ({exc}); "
                          "resume from another checkpoint folder") from None


def check_state(state: dict, where: str) -> None:
    missing = [k for k in RESUME_STATE_KEYS if k not in state]
    if missing:
        raise SdloraError(f"{where}: the training state lacks {', '.join(missing)} (an incomplete or foreign "
                          "state.pt); resume from another checkpoint folder")


def open_resume(resume: str, cfg: RunConfig) -> tuple[ckpt.Checkpoint, dict]:
    """The checkpoint to continue and its state, checked against `cfg` (before anything is loaded or written)."""
    found = ckpt.resolve_resume(resume, cfg.save.output_dir)
    state = ckpt.load_state(found)
    check_state(state, str(found.state_path))
    check_resumable(saved_config(state, str(found.state_path)), cfg, resume)
    step = int(state["step"])
    if cfg.train.epochs is None and step >= cfg.train.steps:
        raise SdloraError(complete_message(step, found, "train.steps", cfg.train.steps))
    return found, state


def complete_message(step: int, found: ckpt.Checkpoint, key: str, value: int) -> str:
    flag = "--steps" if key == "train.steps" else "--epochs"
    return (f"--resume: the run in {found.path.parent.parent} is complete ({step} steps done, {key} = {value}); "
            f"to train it further, pass a larger {flag} (e.g. {flag} {2 * value}) with --resume")
