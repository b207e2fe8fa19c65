"""sdlora's own LoRA file: the canonical dict as it is, marked like every sdlora.lora native file.

Keys are exactly the canonical keys (`unet.<path>.lora_down.weight`, `text_encoder.text_model...alpha`,
`....dora_scale`), so nothing is lost: per-module ranks, alphas and DoRA magnitudes. The header
carries sdlora.lora.native's `sdlora_format` mark and version. A native file saved from one model
(sdlora.lora.save_native of a bare `lora_state_dict`, keys without a component) is read too: each
module path is placed in the component whose module table holds it.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from sdlora import __version__
from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats.modules import ModulePaths, resolve_paths
from sdlora.lora.native import FORMAT, FORMAT_KEY
from sdlora.lora.state import split_key as split_model_key
from sdlora.models.names import canonical_te_path

VERSION_KEY = "sdlora_version"


def to_native(lora: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None):
    """Canonical dict -> (native state dict, metadata with the format mark)."""
    meta = {**dict(metadata or {}), FORMAT_KEY: FORMAT}
    meta.setdefault(VERSION_KEY, __version__)
    return C.normalize(lora), meta


def from_native(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None, *,
                module_paths: ModulePaths | None = None, source: str = "native LoRA"):
    """Native state dict -> (canonical dict, metadata); module paths are checked against the table."""
    metadata = dict(metadata or {})
    found = metadata.get(FORMAT_KEY, FORMAT)
    if found != FORMAT:
        raise SdloraError(f"{source}: sdlora format {found!r} is not supported (this sdlora reads {FORMAT!r}); "
                          "upgrade sdlora")
    known = {c: set(paths) for c, paths in resolve_paths(module_paths).items()}
    lora, unknown = {}, []
    for key, tensor in state.items():
        canonical = _canonical_key(key, known)
        if canonical is None:
            unknown.append(key)
        else:
            lora[canonical] = tensor
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:5])
        raise SdloraError(f"{source}: {len(unknown)} key(s) name no SD 1.x module or LoRA parameter, e.g. {shown}")
    return C.normalize(lora), metadata


def _canonical_key(key: str, known: Mapping[str, set[str]]) -> str | None:
    """The canonical key for a native key with or without its component prefix; None if unknown."""
    try:
        component, path, param = C.split_key(key)
        return key if path in known.get(component, ()) else None
    except SdloraError:
        pass
    try:
        path, param = split_model_key(key)
    except SdloraError:
        return None
    if path in known.get("unet", ()):
        return C.join_key("unet", path, param)
    if canonical_te_path(path) in known.get("text_encoder", ()):
        return C.join_key("text_encoder", canonical_te_path(path), param)
    return None
