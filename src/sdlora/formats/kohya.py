"""kohya-ss / A1111 / ComfyUI LoRA files (LoRA and LoCon), to and from the canonical dict.

    lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight
    lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha            (0-d; missing = rank)
    lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight                (LoCon: up is 1x1)
    ....dora_scale                                                        (out, 1[, 1, 1]): DoRA magnitude

The module part is a prefix from COMPONENT_PREFIX plus the module path with `.` -> `_`; reading it
back goes through a table of the model's own module names (sdlora.formats.modules).
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping

import torch

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats import networks
from sdlora.formats.lycoris_meta import lycoris_metadata
from sdlora.formats.modules import ModulePaths, flat_name, flat_table, resolve_paths

COMPONENT_PREFIX: dict[str, str] = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
# canonical parameter -> kohya parameter: the same words (sdlora.lora.keys: LoRA, LyCORIS LoHa / LoKr
# factors, alpha); DoRA's magnitude keeps kohya's shape
PARAMS: dict[str, str] = {param: param for param in C.PARAMS}
READ_PARAMS = {v: k for k, v in PARAMS.items()}

# The ss_* fields kohya's train_network.py writes that are derived from the tensors themselves.
BASE_METADATA = {
    "ss_network_module": "networks.lora",
    "ss_base_model_version": "sd_v1",
    "ss_v2": "False",
    "modelspec.sai_model_spec": "1.0.0",
    "modelspec.architecture": "stable-diffusion-v1/lora",
    "modelspec.implementation": "diffusers",
    "modelspec.resolution": "512x512",
}


def _canonical_dora(params: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    """A dora_scale must hold one norm per output channel (LyCORIS' default `wd_on_out`); the
    input-axis form (1, in) is a different decomposition that sdlora cannot run."""
    tensor, out = params[C.DORA], int(params[C.UP].shape[0])
    if tensor.shape[0] != out or tensor.numel() != out:
        raise SdloraError(f"{key}: dora_scale of shape {tuple(tensor.shape)} is not one value per output "
                          f"channel ({out}); DoRA decomposed on the input axis is not supported")
    return tensor.reshape(C.dora_shape(params))


def to_kohya(lora: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None):
    """Canonical dict -> (kohya state dict, metadata with kohya's ss_* fields filled in; LyCORIS's
    for files holding LoHa / LoKr modules)."""
    modules = C.group(lora)
    state: dict[str, torch.Tensor] = {}
    for (component, path), params in modules.items():
        name = COMPONENT_PREFIX[component] + flat_name(path)
        for param, tensor in C.with_alpha(params).items():
            state[f"{name}.{PARAMS[param]}"] = tensor
    # BASE_METADATA are defaults (a trainer knows its resolution); the tensor-derived fields always win
    return state, {**BASE_METADATA, **dict(metadata or {}), **derived_metadata(modules)}


def derived_metadata(modules: Mapping[C.Module, Mapping[str, torch.Tensor]]) -> dict[str, str]:
    """The fields read off the tensors (every format's writer uses them): LyCORIS's for files holding
    LoHa / LoKr modules, kohya's otherwise."""
    if any(networks.is_factored(p) for p in modules.values()):
        return lycoris_metadata(modules)
    return kohya_metadata(modules)


def kohya_metadata(modules: Mapping[C.Module, Mapping[str, torch.Tensor]]) -> dict[str, str]:
    """ss_network_dim/alpha: the most common rank/alpha of Linear and 1x1-conv modules; conv_dim/alpha
    in ss_network_args: those of the 3x3 convs (kohya's split between network_dim and conv_dim)."""
    conv = [p for p in modules.values() if _is_kxk_conv(p[C.DOWN])]
    linear = [p for p in modules.values() if not _is_kxk_conv(p[C.DOWN])]
    meta = {}
    if linear:
        meta["ss_network_dim"] = str(Counter(C.rank(p) for p in linear).most_common(1)[0][0])
        meta["ss_network_alpha"] = f"{Counter(C.alpha(p) for p in linear).most_common(1)[0][0]:g}"
    args = {}
    if conv:
        args["conv_dim"] = str(Counter(C.rank(p) for p in conv).most_common(1)[0][0])
        args["conv_alpha"] = f"{Counter(C.alpha(p) for p in conv).most_common(1)[0][0]:g}"
    if any(C.DORA in p for p in modules.values()):
        args["dora_wd"] = "True"
    if args:
        meta["ss_network_args"] = json.dumps(args)
    components = {c for c, _ in modules}
    meta["ss_network_train_unet_only"] = str(components == {"unet"})
    meta["ss_network_train_text_encoder_only"] = str(components == {"text_encoder"})
    return meta


def _is_kxk_conv(down: torch.Tensor) -> bool:
    return down.dim() == 4 and tuple(down.shape[2:]) != (1, 1)


def _split(key: str) -> tuple[str, str]:
    """"lora_unet_x_y.lora_up.weight" -> ("lora_unet_x_y", "lora_up.weight")."""
    name, _, param = key.partition(".")
    return name, param


def from_kohya(state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None, *,
               module_paths: ModulePaths | None = None, source: str = "kohya LoRA"):
    """kohya state dict -> (canonical dict, metadata). Unknown keys are an error listing them."""
    tables = {c: flat_table(paths) for c, paths in resolve_paths(module_paths).items()}
    modules: dict[C.Module, dict[str, torch.Tensor]] = {}
    unknown = []
    for key, tensor in state.items():
        name, param = _split(key)
        target = _module_of(name, tables)
        if target is None or param not in READ_PARAMS:
            unknown.append(key)
            continue
        modules.setdefault(target, {})[READ_PARAMS[param]] = tensor
    if unknown:
        shown = ", ".join(repr(k) for k in unknown[:5])
        raise SdloraError(f"{source}: {len(unknown)} key(s) name no SD 1.x module or LoRA parameter, e.g. {shown}")
    for (component, path), params in modules.items():
        if C.DORA in params and C.UP in params and not networks.is_factored(params):
            key = f"{COMPONENT_PREFIX[component]}{flat_name(path)}.dora_scale"
            params[C.DORA] = _canonical_dora(params, key)
    return C.normalize(C.ungroup(modules)), dict(metadata or {})


def _module_of(name: str, tables: Mapping[str, Mapping[str, str]]) -> C.Module | None:
    for component, prefix in COMPONENT_PREFIX.items():
        if name.startswith(prefix):
            path = tables.get(component, {}).get(name[len(prefix):])
            return None if path is None else (component, path)
    return None
