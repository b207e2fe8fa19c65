"""The adapter phase of a run: the configured LoRA injected (fp32) and made the only trainable weights.

`lora.overrides` patterns are matched against the names files use, `unet.<path>` and
`text_encoder.text_model.<path>` (independent of the transformers version); conv modules (LoCon) get
lora.conv_rank / conv_alpha first, then overrides in order (later wins; rank 0 leaves a module out).
"""
from __future__ import annotations

import re

import torch
from torch import nn

from sdlora.config import RunConfig
from sdlora.errors import SdloraError
from sdlora.lora import inject, lora_modules, mark_only_lora_trainable
from sdlora.lora.adapter import OWN_OPTIONS
from sdlora.lora.presets import compile_pattern, resolve_targets
from sdlora.models.components import SDComponents
from sdlora.models.names import canonical_te_path


def adapter_options(cfg: RunConfig) -> dict:
    """The adapter options of lora.* that apply to the configured algorithm (sdlora.lora.adapter.OWN_OPTIONS)."""
    lora = cfg.lora
    opts = {"algorithm": lora.algorithm, "rslora": lora.rs_scaling, "dora": lora.dora, "dropout": lora.dropout,
            "rank_dropout": lora.rank_dropout, "module_dropout": lora.module_dropout, "init": lora.init,
            "factor": lora.factor, "use_tucker": lora.use_tucker, "decompose_both": lora.decompose_both,
            "full_matrix": lora.full_matrix}
    foreign = {name for algo, names in OWN_OPTIONS.items() if algo != lora.algorithm for name in names}
    return {k: v for k, v in opts.items() if k not in foreign or k in OWN_OPTIONS[lora.algorithm]}


def _linear_conv_paths(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _file_path(component: str, path: str) -> str:
    """The name users write patterns against: `unet.<path>` / `text_encoder.text_model.<path>`."""
    return f"{component}.{canonical_te_path(path) if component == 'text_encoder' else path}"


def module_settings(model: nn.Module, component: str, targets: list[str], cfg: RunConfig,
                    matched: set[int]) -> dict[str, dict]:
    """Per-module rank/alpha that differ from the defaults, as {exact-path regex: settings};
    `matched` collects the indices of the overrides that hit something."""
    lora = cfg.lora
    paths = resolve_targets(targets, _linear_conv_paths(model))
    conv_paths = set(resolve_targets("unet-conv", paths)) if lora.conv and component == "unet" else set()
    plan = {}
    for path in paths:
        settings = {}
        if path in conv_paths and (lora.conv_rank or lora.conv_alpha is not None):
            settings.update(rank=lora.conv_rank or lora.rank, alpha=lora.conv_alpha)
        for i, o in enumerate(lora.overrides):
            if re.fullmatch(o.pattern, _file_path(component, path)):
                matched.add(i)
                settings.update({k: v for k, v in (("rank", o.rank), ("alpha", o.alpha)) if v is not None})
        if settings:
            plan[re.escape(path)] = settings
    return plan


def attach_lora(components: SDComponents, cfg: RunConfig) -> dict[str, int]:
    """Inject the configured adapters (fp32) and make them the only trainable weights.

    Returns {"unet": module count[, "text_encoder": module count]} for logs.
    """
    lora, opts = cfg.lora, adapter_options(cfg)
    for i, o in enumerate(lora.overrides):
        compile_pattern(f"lora.overrides[{i}].pattern", o.pattern)
    jobs = [("unet", components.unet, [lora.unet_preset] + (["unet-conv"] if lora.conv else []), lora.rank)]
    if lora.train_text_encoder:
        jobs.append(("text_encoder", components.text_encoder, ["text-encoder"], lora.text_encoder_rank or lora.rank))
    matched: set[int] = set()
    plans = [(c, m, t, r, module_settings(m, c, t, cfg, matched)) for c, m, t, r in jobs]
    unused = [o.pattern for i, o in enumerate(lora.overrides) if i not in matched]
    if unused:
        raise SdloraError(f"lora.overrides pattern {unused[0]!r} matches no trained module "
                          "(patterns match names like `unet.up_blocks.3.attentions.0.proj_in`)")
    counts = {}
    for component, model, targets, rank, overrides in plans:
        inject(model, targets, rank, lora.alpha, overrides=overrides or None, **opts)
        mark_only_lora_trainable(model)
        counts[component] = len(lora_modules(model))
    return counts


def trainable_models(components: SDComponents, cfg: RunConfig) -> dict[str, nn.Module]:
    models = {"unet": components.unet}
    if cfg.lora.train_text_encoder:
        models["text_encoder"] = components.text_encoder
    return models


def lora_parameters(models: dict[str, nn.Module]) -> list[torch.Tensor]:
    return [p for m in models.values() for p in m.parameters() if p.requires_grad]
