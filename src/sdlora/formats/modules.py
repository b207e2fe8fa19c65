"""Which module paths a LoRA file may name, read off a model's own module tree.

kohya flattens a module path by replacing `.` with `_`, and `_` also occurs inside module names
(`to_q`, `down_blocks`, `ff.net.0.proj` -> `ff_net_0_proj`), so the way back is a table built from
the real module tree ({flat name: dotted path}), never a guess. Without a model at hand the
table comes from the full-size SD 1.4 architecture built on the meta device (no memory, ~0.2 s);
every smaller SD 1.x-architecture model (sd-tiny, the test models) names a subset of those paths.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

import torch
from torch import nn

from sdlora.errors import SdloraError
from sdlora.lora.layers import LoRAModule, wrapper_for
from sdlora.models.names import canonical_te_path

ModulePaths = Mapping[str, Iterable[str]]  # component -> canonical module paths


def lora_paths(model: nn.Module) -> list[str]:
    """Paths of the layers LoRA can wrap (Linear, Conv2d, or already a LoRA wrapper), in tree order."""
    paths = []
    for path, module in model.named_modules():
        if isinstance(module, LoRAModule) or (wrapper_for(module) is not None and not _inside_wrapper(path, paths)):
            paths.append(path)
    return paths


def _inside_wrapper(path: str, found: list[str]) -> bool:
    # `x.base`, `x.adapters.a.down` under a wrapper `x` are not separate sites
    return bool(found) and path.startswith(found[-1] + ".")


def component_paths(unet: nn.Module, text_encoder: nn.Module) -> dict[str, tuple[str, ...]]:
    """{component: canonical paths}; text-encoder paths in the `text_model.` form files use."""
    return {
        "unet": tuple(lora_paths(unet)),
        "text_encoder": tuple(canonical_te_path(p) for p in lora_paths(text_encoder)),
    }


@lru_cache(maxsize=1)
def sd14_paths() -> dict[str, tuple[str, ...]]:
    """Module paths of SD 1.4's UNet and CLIP text encoder (built on the meta device, cached)."""
    from sdlora.models.architecture import build_text_encoder, build_unet, sd14_config

    with torch.device("meta"):
        unet = build_unet(sd14_config("unet"))
        text_encoder = build_text_encoder(sd14_config("text_encoder"))
    return component_paths(unet, text_encoder)


def flat_name(path: str) -> str:
    """kohya's spelling of a module path: every `.` becomes `_`."""
    return path.replace(".", "_")


def flat_table(paths: Iterable[str]) -> dict[str, str]:
    """{flat name: dotted path}; two paths flattening alike would make the format ambiguous."""
    table: dict[str, str] = {}
    for path in paths:
        flat = flat_name(path)
        if table.setdefault(flat, path) != path:
            raise SdloraError(f"module paths {table[flat]!r} and {path!r} have the same kohya name {flat!r}")
    return table


def resolve_paths(module_paths: ModulePaths | None) -> ModulePaths:
    """The given table, or SD 1.4's when None."""
    return sd14_paths() if module_paths is None else module_paths


@lru_cache(maxsize=1)
def sd14_kernels() -> dict[str, dict[str, tuple[int, int] | None]]:
    """{component: {canonical path: conv kernel (kh, kw), or None for a Linear}} of SD 1.4 (meta device).

    LoHa / LoKr files may store a conv's factors flattened; every SD 1.x-architecture model (sd-tiny
    too) has the same kernel at the same path, so this table restores the conv shape."""
    from sdlora.models.architecture import build_text_encoder, build_unet, sd14_config

    with torch.device("meta"):
        nets = {"unet": build_unet(sd14_config("unet")), "text_encoder": build_text_encoder(sd14_config("text_encoder"))}
    table: dict[str, dict[str, tuple[int, int] | None]] = {}
    for component, net in nets.items():
        name = canonical_te_path if component == "text_encoder" else (lambda p: p)
        table[component] = {name(p): (tuple(m.kernel_size) if isinstance(m, nn.Conv2d) else None)
                            for p, m in net.named_modules() if wrapper_for(m) is not None}
    return table
