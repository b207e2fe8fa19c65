"""Attach LoRA wrappers to any `nn.Module` by module path, and take them off again.

inject() replaces each selected `nn.Linear` / `nn.Conv2d` child with a wrapper holding the very
same module object as `.base`; remove() puts those objects back, so the module tree and its
state_dict are exactly what they were. A module that is already wrapped gains another named
adapter instead of being wrapped twice. Nothing is changed when any selected module fails.
"""
from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence

from torch import nn

from sdlora.errors import SdloraError
from sdlora.lora.adapter import ADAPTER_OPTIONS, check_multiplier, check_options
from sdlora.lora.layers import LoRAModule, wrapper_for
from sdlora.lora.presets import compile_pattern, resolve_targets

OVERRIDE_KEYS = ("rank", "alpha") + ADAPTER_OPTIONS


def _walk(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module, str, nn.Module]]:
    """(path, parent, attribute, child) for every descendant, not descending into LoRA wrappers."""
    for name, child in module.named_children():
        path = prefix + name
        yield path, module, name, child
        if not isinstance(child, LoRAModule):
            yield from _walk(child, path + ".")


def lora_modules(model: nn.Module) -> dict[str, LoRAModule]:
    """Every LoRA wrapper in `model`, by dotted path (the path of the module it wraps)."""
    return {path: child for path, _, _, child in _walk(model) if isinstance(child, LoRAModule)}


def _settings(path: str, defaults: dict, overrides: Mapping[str, dict]) -> dict:
    """Adapter settings for `path`: defaults, then every matching override in order (last wins)."""
    settings = dict(defaults)
    for pattern, values in overrides.items():
        if pattern.fullmatch(path):
            settings.update(values)
    return settings


def _compile_overrides(overrides: Mapping[str, Mapping] | None) -> dict[re.Pattern, dict]:
    compiled = {}
    for regex, values in (overrides or {}).items():
        if not isinstance(values, Mapping):
            raise SdloraError(f"override {regex!r} must map to a dict like {{'rank': 8, 'alpha': 4}}")
        unknown = sorted(set(values) - set(OVERRIDE_KEYS))
        if unknown:
            raise SdloraError(f"override {regex!r} has unknown key {unknown[0]!r}; known: {', '.join(OVERRIDE_KEYS)}")
        compiled[compile_pattern(f"override {regex!r}", regex)] = dict(values)
    return compiled


def inject(model: nn.Module, targets: str | Sequence[str], rank: int = 4, alpha: float | None = None, *,
           adapter: str = "default", overrides: Mapping[str, Mapping] | None = None,
           **opts) -> dict[str, LoRAModule]:
    """Add adapter `adapter` to every Linear/Conv2d whose path a target fullmatches.

    targets: a preset name (see sdlora.lora.presets.PRESETS) or a list of regexes / preset names.
    overrides: {regex: {"rank": r, "alpha": a, ...}} per-module settings, later entries win;
    rank 0 in an override leaves the matching modules out (kohya-style block-wise dims).
    opts: LoRAModule.add_adapter options (rslora, dora, dropout, rank_dropout, module_dropout,
    init, dtype, multiplier). Returns {path: wrapper} for the modules that got the adapter.
    """
    check_options(rank, alpha, **opts)
    sites = {path: (parent, name, child) for path, parent, name, child in _walk(model)
             if isinstance(child, LoRAModule) or wrapper_for(child) is not None}
    selected = resolve_targets(targets, list(sites))
    compiled = _compile_overrides(overrides)
    for pattern in compiled:
        if not any(pattern.fullmatch(path) for path in selected):
            raise SdloraError(f"override {pattern.pattern!r} matches none of the {len(selected)} targeted modules")
    defaults = {"rank": rank, "alpha": alpha, **opts}
    plan = {path: _settings(path, defaults, compiled) for path in selected}
    return inject_modules(model, {p: s for p, s in plan.items() if s["rank"] != 0}, adapter=adapter)


def inject_modules(model: nn.Module, plan: Mapping[str, dict], *, adapter: str = "default") -> dict[str, LoRAModule]:
    """Add adapter `adapter` at exact module paths, each with its own settings {"rank": r, "alpha": a, ...}."""
    sites = {path: (parent, name, child) for path, parent, name, child in _walk(model)
             if isinstance(child, LoRAModule) or wrapper_for(child) is not None}
    unknown = [path for path in plan if path not in sites]
    if unknown:
        raise SdloraError(f"{len(unknown)} of {len(plan)} module paths are not Linear/Conv2d modules of this model "
                          f"(first: {unknown[0]!r}); was this made for another model?")
    done: dict[str, LoRAModule] = {}
    try:
        for path, settings in plan.items():
            done[path] = _attach(*sites[path], adapter, settings)
    except SdloraError as err:
        _rollback(sites, done, adapter)
        raise SdloraError(f"{path}: {err}") from None
    except BaseException:
        _rollback(sites, done, adapter)
        raise
    return done


def _attach(parent: nn.Module, name: str, child: nn.Module, adapter: str, settings: dict) -> LoRAModule:
    """Add the adapter to `child` (wrapping it first unless it is a wrapper already)."""
    wrapper = child if isinstance(child, LoRAModule) else wrapper_for(child)(child)
    try:
        wrapper.add_adapter(adapter, **settings)
    except BaseException:
        if wrapper is not child:
            _unwrap(parent, name, wrapper)
        raise
    setattr(parent, name, wrapper)
    return wrapper


def _rollback(sites: dict, done: dict[str, LoRAModule], adapter: str) -> None:
    """Undo a partly applied inject(): drop the new adapter, unwrap wrappers created for it."""
    for path, wrapper in done.items():
        parent, name, child = sites[path]
        if wrapper is child:  # the wrapper existed before: keep it and its other adapters
            wrapper.remove_adapter(adapter)
        else:
            _unwrap(parent, name, wrapper)


def _unwrap(parent: nn.Module, name: str, wrapper: LoRAModule) -> None:
    """Put the original module object back, with its original requires_grad flags."""
    for param_name, param in wrapper.base.named_parameters():
        param.requires_grad_(wrapper.base_requires_grad.get(param_name, param.requires_grad))
    setattr(parent, name, wrapper.base)


def remove(model: nn.Module, adapter: str | None = None) -> list[str]:
    """Remove LoRA from `model`: every wrapper (adapter=None) or only adapter `adapter`.

    Merged layers are unmerged first, so base weights come back as they were. A wrapper left
    without adapters is replaced by its original module. Returns the affected paths.
    """
    affected = []
    for path, parent, name, child in list(_walk(model)):
        if not isinstance(child, LoRAModule) or (adapter is not None and adapter not in child.adapters):
            continue
        if child.merged:
            child.unmerge()
        if adapter is not None:
            child.remove_adapter(adapter)
        if adapter is None or not child.adapters:
            _unwrap(parent, name, child)
        affected.append(path)
    if adapter is not None and not affected:
        raise SdloraError(f"no LoRA adapter named {adapter!r} in this model; it has {sorted(adapter_names(model))}")
    return affected


def adapter_names(model: nn.Module) -> set[str]:
    return {name for wrapper in lora_modules(model).values() for name in wrapper.adapters}


def set_multiplier(model: nn.Module, adapter: str, value: float) -> int:
    """Set adapter `adapter`'s runtime multiplier on every layer (0 disables it); returns the layer count."""
    value = check_multiplier(value)
    layers = [w for w in lora_modules(model).values() if adapter in w.adapters]
    if not layers:
        raise SdloraError(f"no LoRA adapter named {adapter!r} in this model; it has {sorted(adapter_names(model))}")
    if any(w.merged for w in layers):
        raise SdloraError("cannot change a multiplier while LoRA is merged into the weights; unmerge first")
    for wrapper in layers:
        wrapper.adapters[adapter].multiplier = float(value)
    return len(layers)


@contextlib.contextmanager
def multiplier(models: Sequence[nn.Module], adapter: str, value: float):
    """Run adapter `adapter` at `value` in every model of `models` that holds it, for the duration of a
    `with` block; each layer gets its previous multiplier back afterwards (also after an error)."""
    layers = [w for m in models for w in lora_modules(m).values() if adapter in w.adapters]
    saved = [(w, w.adapters[adapter].multiplier) for w in layers]
    try:
        for model in models:
            if adapter in adapter_names(model):
                set_multiplier(model, adapter, value)
        yield
    finally:
        for wrapper, previous in saved:
            wrapper.adapters[adapter].multiplier = previous


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight (forward then costs what the base model costs)."""
    wrappers = lora_modules(model).values()
    if any(w.merged for w in wrappers):
        raise SdloraError("LoRA is already merged into this model; unmerge first")
    for wrapper in wrappers:
        wrapper.merge()
    return len(wrappers)


def unmerge_lora(model: nn.Module) -> int:
    """Undo merge_lora() exactly (layers that are not merged are left alone)."""
    merged = [w for w in lora_modules(model).values() if w.merged]
    for wrapper in merged:
        wrapper.unmerge()
    return len(merged)
