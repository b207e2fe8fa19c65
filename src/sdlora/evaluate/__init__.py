"""Comparing and evaluating LoRAs: the base-vs-LoRA sweep (`compare`), a self-contained HTML report,
CLIP/DINO features and the metrics papers report (`evaluate`). The grids live in sdlora.imaging.

Names are imported on first use (PEP 562), so the command line can read defaults without torch.
"""
from __future__ import annotations

import importlib

# public name -> the module that defines it
EXPORTS: dict[str, str] = {
    **dict.fromkeys(["CompareJob", "CompareResult", "compare"], "compare"),
    **dict.fromkeys(["EvaluateJob", "EvaluateResult", "evaluate"], "evaluation"),
}
__all__ = sorted(EXPORTS)


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module 'sdlora.evaluate' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sdlora.evaluate.{EXPORTS[name]}"), name)
