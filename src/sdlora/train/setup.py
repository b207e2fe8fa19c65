"""Getting a run ready: precision, the accelerator, the base model, LoRA injection, data and caches.

Precision policy: the frozen weights (UNet, VAE, text encoder) are cast to the low precision
(fp16/bf16) to halve their memory; the LoRA parameters, their gradients and the optimizer state stay
in fp32, and autocast runs the matmuls in the low precision. Because every trainable tensor is fp32,
the fp16 GradScaler can always unscale (no "Attempting to unscale FP16 gradients").
"""
from __future__ import annotations

import gc
import logging
import re
from dataclasses import dataclass

import torch
from torch import nn

from sdlora.config import RunConfig
from sdlora.errors import SdloraError
from sdlora.lora import inject, lora_modules, mark_only_lora_trainable
from sdlora.lora.presets import compile_pattern, resolve_targets
from sdlora.models.components import SDComponents
from sdlora.models.names import canonical_te_path
from sdlora.train.precision import choose as choose_precision

log = logging.getLogger("sdlora.train")

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_precision(setting: str, device_type: str) -> str:
    """`auto` -> a concrete mode; the rule and its reasons live in sdlora.train.precision."""
    return choose_precision(setting, device_type).mode


def make_accelerator(cfg: RunConfig):
    """The HF Accelerator: device placement, DDP, autocast and the fp16 GradScaler."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(cfg.train.mixed_precision, device_type)
    # module dropout skips whole adapters, so some LoRA weights get no gradient in a step
    ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.lora.module_dropout > 0)
    return Accelerator(mixed_precision=precision, cpu=device_type == "cpu", kwargs_handlers=[ddp])


def release_accelerator(acc) -> None:
    """End the run's accelerator so that another train() in this process may use other settings.

    end_training() tears down the process group (gloo aborts at exit otherwise). accelerate keeps
    mixed_precision in a process-wide singleton that refuses changes; clearing it is the only way
    to train twice in one process (a notebook, the test suite) with different precisions.
    """
    from accelerate.state import AcceleratorState, GradientState

    acc.end_training()
    AcceleratorState._reset_state()
    GradientState._reset_state()


def load_model(name: str, dtype: torch.dtype) -> SDComponents:
    """The base model (see sdlora.models.load_components), every weight frozen."""
    from sdlora.models import load_components

    components = load_components(name, dtype=dtype)
    for module in components.modules().values():
        module.requires_grad_(False)
    return components


def enable_sdpa(unet: nn.Module) -> None:
    """PyTorch's fused scaled_dot_product_attention in every UNet attention layer."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())


def speed_up_unet(unet: nn.Module, *, channels_last: bool, compile: bool, backend: str) -> None:
    """Channels-last memory format and/or torch.compile in place (module and parameter names stay
    as they are, so LoRA export and checkpoints are unaffected)."""
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if compile:
        check_compile_backend(backend)
        unet.compile(backend=backend)


def check_compile_backend(backend: str) -> None:
    from torch import _dynamo

    known = _dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise SdloraError(f"train.compile_backend: {backend!r} is not a torch.compile backend here; "
                          f"use one of {', '.join(sorted(known))}")


def enable_checkpointing(components: SDComponents, text_encoder: bool) -> None:
    """Recompute activations in backward (UNet, and the text encoder when it trains)."""
    components.unet.enable_gradient_checkpointing()
    if text_encoder:
        te = components.text_encoder
        # transformers 5 renamed it (the old name warns); transformers 4 only has the old one
        enable = getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable
        enable()


def adapter_options(cfg: RunConfig) -> dict:
    lora = cfg.lora
    return {"rslora": lora.rs_scaling, "dora": lora.dora, "init": lora.init, "dropout": lora.dropout,
            "rank_dropout": lora.rank_dropout, "module_dropout": lora.module_dropout}


def _linear_conv_paths(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _file_path(component: str, path: str) -> str:
    """The name users write patterns against: `unet.<path>` / `text_encoder.text_model.<path>`."""
    return f"{component}.{canonical_te_path(path) if component == 'text_encoder' else path}"


def module_settings(model: nn.Module, component: str, targets: list[str], cfg: RunConfig,
                    matched: set[int]) -> dict[str, dict]:
    """Per-module rank/alpha that differ from the defaults, as {exact-path regex: settings}.

    `lora.overrides` patterns are matched against `unet.<path>` / `text_encoder.text_model.<path>`
    (the file names, independent of the transformers version); `matched` collects the override
    indices that hit something. Conv modules (LoCon) get lora.conv_rank / conv_alpha first.
    """
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


@dataclass
class Data:
    train: object  # LoRADataset
    val: object | None
    text_cached: bool
    latents_cached: bool


def prepare_data(cfg: RunConfig, components: SDComponents, accelerator, cache_dir: str) -> Data:
    """Build the datasets and cache latents / text outputs (the main process writes disk caches first)."""
    from sdlora.data import build_datasets, cache_latents, cache_text

    train, val = build_datasets(cfg.data, components.tokenizer, seed=cfg.train.seed)
    device, show = accelerator.device, accelerator.is_local_main_process
    latents = cfg.data.cache_latents != "off"
    text = cfg.data.cache_text and not cfg.lora.train_text_encoder
    with accelerator.main_process_first():
        for dataset in (d for d in (train, val) if d is not None):
            if latents:
                cache_latents(dataset, components.vae, mode=cfg.data.cache_latents, cache_dir=cache_dir,
                              device=device, num_workers=cfg.data.num_workers, progress=show)
            if text:
                text = cache_text(dataset, components.text_encoder, device=device, progress=show) and text
    return Data(train, val, text_cached=bool(text), latents_cached=latents)


def offload(module: nn.Module | None, keep: bool = True) -> None:
    """Move a frozen encoder off the accelerator: to the CPU (keep, e.g. for validation samples) or
    to the meta device, which frees its memory while the module tree (names, configs) stays."""
    if module is not None:
        module.to("cpu" if keep else "meta")
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
