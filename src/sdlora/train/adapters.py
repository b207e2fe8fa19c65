"""The adapter phase of a run: the configured LoRA injected (fp32) and made the only trainable weights.

`lora.overrides` patterns are matched against the names files use, `unet.<path>` and
`text_encoder.text_model.<path>` (independent of the transformers version); conv modules (LoCon) get
lora.conv_rank / conv_alpha first, then the per-block lists (kohya's `block_dims`, `block_alphas`,
`conv_block_dims`, `conv_block_alphas`: 25 values over sdlora.lora.blocks.UNET_BLOCKS25), then overrides
in order (later wins; rank 0 leaves a module out); a block whose lr weight is 0 is left out last.
"""
from __future__ import annotations

import logging
import re

import torch
from torch import nn

from sdlora.config import RunConfig
from sdlora.errors import SdloraError
from sdlora.lora import inject, lora_modules, mark_only_lora_trainable
from sdlora.lora.adapter import OWN_OPTIONS
from sdlora.lora.blocks import UNET_BLOCKS25, block_lr_weights, block_of
from sdlora.lora.presets import compile_pattern, resolve_targets
from sdlora.models.components import SDComponents
from sdlora.models.names import canonical_te_path

log = logging.getLogger("sdlora.train")


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


# Where a UNet module's rank / alpha comes from when per-block lists are set: the first of these
# lora.* fields that is set (a per-block list gives the module's block entry; a single conv_rank /
# conv_alpha was applied already). Plain modules: block_*; conv (LoCon) modules: conv_block_*, then
# conv_rank / conv_alpha, then block_*.
BLOCK_SOURCES: dict[tuple[bool, str], tuple[str, ...]] = {
    (False, "rank"): ("block_dims",), (False, "alpha"): ("block_alphas",),
    (True, "rank"): ("conv_block_dims", "conv_rank", "block_dims"),
    (True, "alpha"): ("conv_block_alphas", "conv_alpha", "block_alphas"),
}
BLOCK_LISTS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")


def block_lr(cfg: RunConfig) -> dict[str, float] | None:
    """{block: lr multiplier} of the UNet's 25 blocks from lora.*_lr_weight, or None when unset."""
    lora = cfg.lora
    return block_lr_weights(lora.down_lr_weight, lora.mid_lr_weight, lora.up_lr_weight, lora.block_lr_zero_threshold)


def block_settings(lora, path: str, is_conv: bool, lr: dict[str, float] | None) -> dict:
    """rank/alpha of UNet module `path` from the per-block lists (empty when none applies)."""
    if lr is None and all(getattr(lora, key) is None for key in BLOCK_LISTS):
        return {}
    try:
        block = block_of("unet", path)
    except SdloraError as err:
        raise SdloraError(f"lora.block_dims / *_lr_weight: {err}") from None
    if block is None:
        return {}
    settings = {}
    for what in ("rank", "alpha"):
        source = next((getattr(lora, key) for key in BLOCK_SOURCES[is_conv, what] if getattr(lora, key) is not None),
                      None)
        if isinstance(source, list):
            value = source[UNET_BLOCKS25.index(block)]
            settings[what] = None if what == "alpha" and value == 0 else value  # alpha 0 means alpha = rank
    return settings


def module_settings(model: nn.Module, component: str, targets: list[str], cfg: RunConfig,
                    matched: set[int]) -> dict[str, dict]:
    """Per-module rank/alpha that differ from the defaults, as {exact-path regex: settings}: conv
    settings, then per-block lists, then lora.overrides in order; a block with lr weight 0 is left out.
    `matched` collects the indices of the overrides that hit something."""
    lora = cfg.lora
    paths = resolve_targets(targets, _linear_conv_paths(model))
    conv_paths = set(resolve_targets("unet-conv", paths)) if lora.conv and component == "unet" else set()
    lr = block_lr(cfg) if component == "unet" else None
    plan = {}
    for path in paths:
        settings = {}
        if path in conv_paths and (lora.conv_rank or lora.conv_alpha is not None):
            settings.update(rank=lora.conv_rank or lora.rank, alpha=lora.conv_alpha)
        if component == "unet":
            settings.update(block_settings(lora, path, path in conv_paths, lr))
        for i, o in enumerate(lora.overrides):
            if re.fullmatch(o.pattern, _file_path(component, path)):
                matched.add(i)
                settings.update({k: v for k, v in (("rank", o.rank), ("alpha", o.alpha)) if v is not None})
        if lr is not None and lr.get(block_of("unet", path)) == 0:
            settings["rank"] = 0  # kohya: a block that does not learn is not in the LoRA
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
        if len(alphas(model)) > 1:
            log.warning("%s adapters have different alphas %s (per-module ranks with lora.alpha unset: alpha = "
                        "rank): A1111 and ComfyUI read them, but diffusers' load_lora_weights applies one alpha "
                        "per model; set lora.alpha (one value for every module) for files meant for diffusers",
                        component, sorted(alphas(model)))
    return counts


def alphas(model: nn.Module) -> set[float]:
    """The distinct alphas of a model's adapters."""
    return {ad.alpha for wrapper in lora_modules(model).values() for ad in wrapper.adapters.values()}


def trainable_models(components: SDComponents, cfg: RunConfig) -> dict[str, nn.Module]:
    models = {"unet": components.unet}
    if cfg.lora.train_text_encoder:
        models["text_encoder"] = components.text_encoder
    return models


def lora_parameters(models: dict[str, nn.Module]) -> list[torch.Tensor]:
    return [p for m in models.values() for p in m.parameters() if p.requires_grad]
