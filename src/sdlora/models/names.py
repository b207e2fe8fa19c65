"""CLIP text-encoder module paths, independent of the installed transformers version.

transformers 4 nests CLIP's text transformer under `text_model` (`text_model.encoder.layers.0.mlp.fc1`);
transformers 5 flattens it (`encoder.layers.0.mlp.fc1`). Files (LoRA formats, converted checkpoints)
always use the canonical transformers-4 form. These two pure functions convert between the canonical
form and whatever the live model uses; they work for module paths and parameter keys alike.
"""
from __future__ import annotations

from torch import nn

PREFIX = "text_model"


def canonical_te_path(path: str) -> str:
    """The canonical (`text_model.`-prefixed) form of a text-encoder module path or parameter key.

    "encoder.layers.0.self_attn.q_proj" -> "text_model.encoder.layers.0.self_attn.q_proj";
    already-canonical paths are returned unchanged; "" (the flat model itself) -> "text_model".
    """
    if path == PREFIX or path.startswith(PREFIX + "."):
        return path
    return f"{PREFIX}.{path}" if path else PREFIX


def is_nested(text_encoder: nn.Module) -> bool:
    """True when the model keeps the transformer under `.text_model` (transformers 4 layout)."""
    return isinstance(getattr(text_encoder, PREFIX, None), nn.Module)


def model_te_path(text_encoder: nn.Module, canonical_path: str) -> str:
    """The path `text_encoder` itself uses for `canonical_path` (a path in either form is accepted)."""
    canonical = canonical_te_path(canonical_path)
    if is_nested(text_encoder):
        return canonical
    return canonical[len(PREFIX) + 1 :] if canonical != PREFIX else ""
