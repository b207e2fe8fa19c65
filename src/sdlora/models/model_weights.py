"""An SD 1.x model's UNet and text-encoder weights, read one module at a time (for file tools that
visit each module once, such as extract, on the full-size model without holding it whole).

`open_weights(model)` takes any form `load_components` takes. A single .safetensors file (LDM key
layout) and a diffusers folder of .safetensors files (a hub id resolves to one) are read lazily: the
module trees are built empty (meta tensors: paths and shapes, no storage) and each weight is read from
its file when asked for (sdlora.models.tensor_file), its name mapped with the LDM key tables
(sdlora.models.ldm_keys). Forms that cannot be read in parts (.ckpt pickles, folders of .bin files)
are loaded whole, in fp32, behind the same interface.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate import init_empty_weights
from torch import nn

from sdlora.models import hub
from sdlora.models.architecture import build_text_encoder, build_unet
from sdlora.models.checkpoint_io import SAFETENSORS_SUFFIX
from sdlora.models.components import SDComponents
from sdlora.models.component_files import empty_network, weight_files
from sdlora.models.folder import check_folder
from sdlora.models.ldm_keys import map_key, split_ldm, unet_table
from sdlora.models.loader import load_components, resolve_model
from sdlora.models.names import canonical_te_path
from sdlora.models.single_file import build_empty, check_sd1_layout, file_configs, sd14_configs
from sdlora.models.tensor_file import TensorFile

log = logging.getLogger(__name__)

COMPONENTS = ("unet", "text_encoder")
Index = dict[tuple[str, str], tuple[TensorFile, str]]  # (component, canonical parameter key) -> (file, file key)


class ModelWeights:
    """Module trees (`unet`, `text_encoder`: for paths and shapes) and `weight()` of one module.

    `index` is None when the networks are loaded (their own weights are read); otherwise the trees are
    empty and weights come from the files the index names.
    """

    def __init__(self, unet: nn.Module, text_encoder: nn.Module, source: str, index: Index | None = None):
        self.unet, self.text_encoder, self.source, self._index = unet, text_encoder, source, index

    @classmethod
    def loaded(cls, components: SDComponents) -> "ModelWeights":
        return cls(components.unet, components.text_encoder, components.source)

    @property
    def lazy(self) -> bool:
        return self._index is not None

    @property
    def reads(self) -> int:
        """Tensors read from files so far (0 for loaded networks)."""
        return sum(f.reads for f in {id(f): f for f, _ in (self._index or {}).values()}.values())

    def weight(self, component: str, path: str) -> torch.Tensor | None:
        """The weight of module `path` ("unet" or "text_encoder" `component`, the path as the trees name
        it) in its stored dtype, or None when this model has no such module."""
        if self._index is None:
            try:
                return getattr(self, component).get_submodule(path).weight.detach()
            except AttributeError:
                return None
        key = (path if component == "unet" else canonical_te_path(path)) + ".weight"
        hit = self._index.get((component, key))
        return None if hit is None else hit[0].read(hit[1])


def open_weights(model: str | Path) -> ModelWeights:
    """The weights of `model` (a name `load_components` takes), lazily wherever its files allow."""
    kind, where = resolve_model(model)
    if kind == "hub":
        kind, where = "folder", hub.fetch(where)
    if kind == "file" and where.suffix.lower() == SAFETENSORS_SUFFIX:
        return single_file_weights(where)
    weights = folder_weights(where) if kind == "folder" else None
    if weights is not None:
        return weights
    log.info("%s: cannot be read one tensor at a time (a pickle or .bin weights); loading it whole", model)
    return ModelWeights.loaded(load_components(model, dtype=torch.float32))


def single_file_weights(path: Path) -> ModelWeights:
    """A single SD 1.x .safetensors file (LDM layout), read lazily."""
    tensors = TensorFile(path)
    keys = tensors.keys()
    named = file_configs(path, tensors.metadata)
    configs = named or sd14_configs()
    check_sd1_layout(path, keys)
    unet, _, text_encoder = build_empty(path, configs, named is not None)
    parts, _ = split_ldm({key: key for key in keys})  # {component: {key without prefix: file key}}
    table = unet_table(configs["unet"])
    index: Index = {}
    for key, full in parts["unet"].items():
        hit = map_key(key, table)
        if hit is not None:
            index[("unet", hit[0])] = (tensors, full)
    for key, full in parts["text_encoder"].items():
        index[("text_encoder", canonical_te_path(key))] = (tensors, full)
    return ModelWeights(unet, text_encoder, str(path), index)


def folder_weights(folder: Path) -> ModelWeights | None:
    """A diffusers folder read lazily; None when its UNet or text encoder is stored as .bin."""
    check_folder(folder)
    files = {name: weight_files(folder / name) for name in COMPONENTS}
    if not all(files.values()):
        return None
    index: Index = {}
    for name in COMPONENTS:
        for path in files[name]:
            tensors = TensorFile(path)
            for key in tensors.keys():
                index.setdefault((name, key if name == "unet" else canonical_te_path(key)), (tensors, key))
    unet = empty_network(folder / "unet", build_unet)
    text_encoder = empty_network(folder / "text_encoder", build_text_encoder)
    return ModelWeights(unet, text_encoder, str(folder), index)


def empty_unet(model: str | Path) -> nn.Module | None:
    """`model`'s UNet built empty (meta tensors: its architecture and size, no weights, nothing read but
    configs and headers), or None for a .ckpt pickle, whose architecture is only known once loaded."""
    kind, where = resolve_model(model)
    if kind == "hub":
        kind, where = "folder", hub.fetch(where)
    if kind == "folder":
        check_folder(where)
        return empty_network(where / "unet", build_unet)
    if where.suffix.lower() != SAFETENSORS_SUFFIX:
        return None
    named = file_configs(where, TensorFile(where).metadata)
    with init_empty_weights():
        return build_unet((named or sd14_configs())["unet"])
