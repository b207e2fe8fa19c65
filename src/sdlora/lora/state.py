"""LoRA weights as flat state dicts, strict loading, and trainability helpers.

Keys are `<module path>.<suffix>` with the suffixes below (kohya's names, module paths as in the
model). `alpha` is a 0-d tensor; absent or 0 means alpha = rank (as kohya reads it).
`dora_scale` is the DoRA magnitude shaped like LyCORIS/ComfyUI write it: (out, 1) for Linear,
(out, 1, 1, 1) for Conv2d (a norm per output row).
"""
from __future__ import annotations

import torch
from torch import nn

from sdlora.errors import SdloraError
from sdlora.lora.inject import inject_modules, lora_modules, remove
from sdlora.lora.factored import FactoredAdapter
from sdlora.lora.keys import (ALPHA, DORA, DOWN, FACTOR_SUFFIXES, SUFFIXES, UP, alpha_value,  # noqa: F401 (re-exported)
                              split_key)
from sdlora.lora.layers import LoRAAdapter, LoRAModule


def _dora_shape(wrapper: LoRAModule) -> tuple[int, ...]:
    weight = wrapper.base.weight
    return (weight.shape[0],) + (1,) * (weight.dim() - 1)


def _adapter_tensors(wrapper: LoRAModule, ad: LoRAAdapter) -> dict[str, torch.Tensor]:
    """suffix -> the live tensor that holds it (alpha as a fresh 0-d tensor)."""
    if isinstance(ad, FactoredAdapter):  # LoHa / LoKr: the factors under their file names
        tensors = {**ad.factors(), ALPHA: torch.tensor(ad.alpha, dtype=torch.float32)}
    else:
        tensors = {DOWN: ad.down.weight, UP: ad.up.weight, ALPHA: torch.tensor(ad.alpha, dtype=torch.float32)}
    if ad.dora:
        tensors[DORA] = ad.magnitude.view(_dora_shape(wrapper))
    return tensors


def _with_adapter(model: nn.Module, adapter: str) -> dict[str, LoRAModule]:
    wrappers = {path: w for path, w in lora_modules(model).items() if adapter in w.adapters}
    if not wrappers:
        raise SdloraError(f"this model has no LoRA adapter named {adapter!r}; inject it first")
    return wrappers


def lora_state_dict(model: nn.Module, adapter: str = "default") -> dict[str, torch.Tensor]:
    """Adapter `adapter`'s weights: {'<path>.lora_down.weight', '<path>.lora_up.weight', '<path>.alpha',
    ['<path>.dora_scale']}, detached copies in the adapters' dtype."""
    out = {}
    for path, wrapper in _with_adapter(model, adapter).items():
        for suffix, tensor in _adapter_tensors(wrapper, wrapper.adapters[adapter]).items():
            out[f"{path}.{suffix}"] = tensor.detach().clone()
    return out


def _mismatch(missing: list[str], unexpected: list[str], adapter: str) -> SdloraError:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (first: {missing[0]!r})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]!r})")
    return SdloraError(f"LoRA weights do not match adapter {adapter!r} of this model: {'; '.join(parts)}; "
                       "was this LoRA made for another model, preset or rank?")


def load_lora_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], adapter: str = "default") -> None:
    """Copy `sd` into adapter `adapter`, strictly: every key must match a module and every shape agree.

    Nothing is written unless the whole dict fits. `alpha` keys are optional (absent or 0: alpha = rank).
    """
    targets: dict[str, tuple[LoRAModule, LoRAAdapter, str, torch.Tensor]] = {}
    for path, wrapper in _with_adapter(model, adapter).items():
        ad = wrapper.adapters[adapter]
        for suffix, tensor in _adapter_tensors(wrapper, ad).items():
            targets[f"{path}.{suffix}"] = (wrapper, ad, suffix, tensor)
    missing = [k for k, (_, _, suffix, _) in targets.items() if suffix != ALPHA and k not in sd]
    unexpected = [k for k in sd if k not in targets]
    if missing or unexpected:
        raise _mismatch(missing, unexpected, adapter)
    for key, value in sd.items():
        expected = targets[key][3].shape
        if tuple(value.shape) != tuple(expected) and not (targets[key][2] == ALPHA and value.numel() == 1):
            raise SdloraError(f"shape mismatch for {key!r}: file has {tuple(value.shape)}, model expects "
                              f"{tuple(expected)}; was this LoRA trained with another rank or model?")
    if any(wrapper.merged for wrapper, *_ in targets.values()):
        raise SdloraError("cannot load LoRA weights while they are merged into the model; unmerge first")
    alphas = {key: alpha_value(sd.get(key), ad.rank, key) for key, (_, ad, suffix, _) in targets.items() if suffix == ALPHA}
    with torch.no_grad():  # everything checked: now write
        for key, (wrapper, ad, suffix, tensor) in targets.items():
            if suffix == ALPHA:
                ad.alpha = alphas[key]
            else:
                tensor.copy_(sd[key].to(tensor.dtype))


def lora_plan(sd: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Per-module adapter settings {path: {"rank", "alpha", "dora"}} read off a LoRA state dict."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        path, suffix = split_key(key)
        groups.setdefault(path, {})[suffix] = value
    plan = {}
    for path, group in groups.items():
        algorithm = module_algorithm(group, path)
        if algorithm != "lora":
            plan[path] = factored_settings(group, algorithm, path)
            continue
        if DOWN not in group or UP not in group:
            missing = DOWN if DOWN not in group else UP
            raise SdloraError(f"LoRA state dict has no {path}.{missing}; the file is incomplete")
        rank = int(group[DOWN].shape[0])
        plan[path] = {"rank": rank, "alpha": alpha_value(group.get(ALPHA), rank, path), "dora": DORA in group}
    return plan


def module_algorithm(group: dict[str, torch.Tensor], where: str) -> str:
    """"lora", "loha" or "lokr" from one module's suffixes; SdloraError when they mix algorithms."""
    found = {FACTOR_SUFFIXES.get(s, "lora") for s in group if s not in (ALPHA, DORA)}
    if len(found) > 1:
        raise SdloraError(f"{where}: the module mixes {' and '.join(sorted(found))} weights; the file is broken")
    return found.pop() if found else "lora"


def factored_rank(group: dict[str, torch.Tensor], algorithm: str) -> int:
    """The rank a LoHa / LoKr module's factors carry (a LoKr with both halves full has none: 1)."""
    if algorithm == "loha":
        return int(group["hada_w1_b"].shape[0]) if "hada_w1_b" in group else 1
    for name in ("lokr_w1_b", "lokr_w2_b"):  # (rank, ...) in every layout
        if name in group:
            return int(group[name].shape[0])
    return 1


def factored_settings(group: dict[str, torch.Tensor], algorithm: str, where: str = "LoRA module") -> dict:
    """Adapter settings that rebuild a LoHa / LoKr module from its stored factors (shapes as stored)."""
    rank = factored_rank(group, algorithm)
    shapes = {s: tuple(t.shape) for s, t in group.items() if s in FACTOR_SUFFIXES}
    return {"algorithm": algorithm, "rank": rank, "alpha": alpha_value(group.get(ALPHA), rank, where),
            "dora": DORA in group, "factor_shapes": shapes}


def inject_from_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], adapter: str = "default",
                           **opts) -> dict[str, LoRAModule]:
    """Inject adapter `adapter` with the modules, ranks, alphas and DoRA that `sd` describes, then load it."""
    plan = {path: {**settings, **opts} for path, settings in lora_plan(sd).items()}
    wrapped = inject_modules(model, plan, adapter=adapter)
    try:
        load_lora_state_dict(model, sd, adapter)
    except BaseException:
        remove(model, adapter)
        raise
    return wrapped


def mark_only_lora_trainable(model: nn.Module, adapter: str | None = None) -> int:
    """Freeze everything but the LoRA parameters (of `adapter`, or of all adapters); returns the trainable count."""
    model.requires_grad_(False)
    for wrapper in lora_modules(model).values():
        for name, ad in wrapper.adapters.items():
            if adapter is None or name == adapter:
                ad.requires_grad_(True)
    return count_trainable(model)


def count_trainable(model: nn.Module) -> int:
    """Number of parameters with requires_grad (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
