"""Training a LoRA: `train(cfg)` runs the loop in sdlora.train.loop; `run(...)` is what `sdlora train`
calls (config file + flags + --set). Building a run goes phase by phase (build: resume, model,
inputs, adapters, optim, state); the rest is one concern per module: noise, loss, step, checkpoint,
runlock, setup (precision, accelerator), batches, validation, progress, guard, classgen, export.

The names below load on first use, so `import sdlora.train.checkpoint` does not import the whole
trainer (diffusers, transformers)."""
from __future__ import annotations

import importlib

_LAZY = {"resolve_config": "sdlora.train.entry", "run": "sdlora.train.entry",
         "TrainResult": "sdlora.train.loop", "train": "sdlora.train.loop"}
__all__ = ["TrainResult", "resolve_config", "run", "train"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdlora.train' has no attribute {name!r}")
