"""Writing the trained LoRA: kohya-style `ss_*` metadata and the files in each configured format.

The LoRA goes out through sdlora.formats (extract -> canonical dict -> save_lora_file, atomic), so
the files are what A1111, ComfyUI and diffusers' load_lora_weights read. A LoRA holding a NaN/inf is
never written: an earlier good file stays in place.

Files are named after the run (save.name, else the run folder's name: runs/me -> me.safetensors, shown
in A1111 as <lora:me:1>); a checkpoint's files add the step (me-000500.safetensors), so compare labels
tell them apart. Metadata is made in one place for every format: the run's settings here, the fields
derived from the tensors (rank, alpha, conv rank) by formats.kohya.derived_metadata, so a diffusers or
native file carries the same values as the kohya one.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path

import torch

from sdlora import __version__
from sdlora.config import RunConfig
from sdlora.dtypes import DTYPES as SAVE_DTYPES
from sdlora.errors import SdloraError
from sdlora.formats import save_lora_file
from sdlora.formats import canonical
from sdlora.formats.apply import extract
from sdlora.formats.kohya import derived_metadata
from sdlora.formats.canonical import first_non_finite
from sdlora.formats.embeddings import save_standalone, standalone_path
from sdlora.generate.prediction import training_metadata
from sdlora.lora import lora_modules
from sdlora.models.components import SDComponents
from sdlora.train.ema import EMA_SUFFIX
from sdlora.train.embeddings import trained as trained_embeddings


def dataset_dirs(dataset: dict) -> dict[str, dict[str, int]]:
    """kohya's ss_dataset_dirs, {folder: {"n_repeats", "img_count"}}: the folders the dataset read with their
    repeats (kohya `N_name` folders included), else one entry per source."""
    folders = dataset.get("folders")
    if folders:
        return {name: {"n_repeats": f["repeats"], "img_count": f["images"]} for name, f in folders.items()}
    return {s["path"]: {"n_repeats": 1, "img_count": s["images"]} for s in dataset.get("sources", [])}


def lora_metadata(cfg: RunConfig, *, step: int, epoch: int, dataset: dict, base: str, started: float,
                  num_processes: int = 1, precision: str | None = None) -> dict[str, str]:
    """kohya's ss_* training metadata (read by A1111's and ComfyUI's LoRA info panels) plus sdlora's.
    The rank/alpha fields come from the tensors when the file is saved (see save_lora)."""
    t, lora = cfg.train, cfg.lora
    res = cfg.data.resolution
    dataset = dict(dataset)
    tags = dataset.pop("tag_frequency", {})
    return {
        "ss_sd_model_name": base,
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_network_module": "networks.lora",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.resolution": f"{res}x{res}",
        "ss_learning_rate": f"{t.lr:g}",
        "ss_unet_lr": f"{t.lr:g}",
        "ss_text_encoder_lr": f"{t.text_encoder_lr:g}" if lora.train_text_encoder else "0",
        "ss_lr_scheduler": t.lr_scheduler,
        "ss_lr_warmup_steps": str(t.warmup_steps),
        "ss_optimizer": t.optimizer,
        "ss_max_train_steps": str(t.steps),
        "ss_steps": str(step),
        "ss_epoch": str(epoch),
        "ss_num_epochs": str(t.epochs if t.epochs is not None else epoch),
        "ss_batch_size_per_device": str(t.batch_size),
        "ss_gradient_accumulation_steps": str(t.grad_accum),
        "ss_total_batch_size": str(t.batch_size * t.grad_accum * num_processes),
        "ss_resolution": f"({res}, {res})",
        "ss_enable_bucket": str(cfg.data.buckets),
        "ss_mixed_precision": precision or t.mixed_precision,  # the resolved one, not `auto`
        "ss_seed": str(t.seed),
        "ss_noise_offset": f"{t.noise_offset:g}",
        "ss_min_snr_gamma": f"{t.min_snr_gamma:g}" if t.min_snr_gamma else "None",
        **training_metadata(t.prediction_type, t.zero_terminal_snr),  # `sdlora generate` samples accordingly
        "ss_loss_type": t.loss_type,
        "ss_huber_schedule": t.huber_schedule,
        "ss_huber_c": f"{t.huber_c:g}",
        "ss_debiased_estimation": str(t.debiased_estimation),
        "ss_multires_noise_iterations": str(t.multires_noise_iterations),
        "ss_multires_noise_discount": f"{t.multires_noise_discount:g}",
        "ss_ip_noise_gamma": f"{t.ip_noise_gamma:g}",
        "ss_prior_loss_weight": f"{t.prior_loss_weight:g}",
        "ss_max_grad_norm": f"{t.max_grad_norm:g}",
        "ss_gradient_checkpointing": str(t.gradient_checkpointing),
        "ss_cache_latents": str(cfg.data.cache_latents != "off"),
        "ss_num_train_images": str(dataset.get("images", 0)),
        "ss_num_reg_images": str(dataset.get("class_images", 0)),
        "ss_dataset_dirs": json.dumps(dataset_dirs(dataset)),
        "ss_training_started_at": f"{started:.0f}",
        "ss_training_finished_at": f"{time.time():.0f}",
        "ss_tag_frequency": json.dumps(tags),
        "ss_output_name": run_name(cfg),
        "sdlora_version": __version__,
        "sdlora_dataset": json.dumps(dataset, sort_keys=True),
    }


def tag_frequency(dataset) -> dict[str, dict[str, int]]:
    """kohya's ss_tag_frequency: {source folder name: {tag: images}} over the training images' captions
    (as trained: prefix/suffix included, split at commas); class images are left out, as kohya does."""
    counts: dict[str, Counter] = {}
    for r in dataset.used_records():
        record = dataset.records[r]
        if not record.is_class:
            folder = Path(dataset.source_paths[record.source]).name
            tags = {t.strip() for t in dataset.full_caption(r).split(",")} - {""}
            counts.setdefault(folder, Counter()).update(tags)
    return {folder: dict(c.most_common()) for folder, c in counts.items()}


def uncaptioned(dataset) -> tuple[int, int]:
    """(training images without a caption of their own, training images); class images not counted."""
    records = [dataset.records[r] for r in dataset.used_records() if not dataset.records[r].is_class]
    return sum(not r.caption.strip() for r in records), len(records)


def caption_warning(dataset) -> str | None:
    """A warning when every training image lacks a caption (they all train on the trigger or nothing)."""
    missing, total = uncaptioned(dataset)
    if not total or missing < total:
        return None
    return (f"WARNING: none of the {total} training images has a caption, so every one trains on the same "
            f"text (the caption prefix or an empty caption); add captions (photo.txt beside photo.png) or set "
            "the source's prompt (data.sources[].prompt, e.g. \"a photo of sks person\"); --prompt only sets "
            "validation prompts")


def run_name(cfg: RunConfig) -> str:
    """The LoRA's name: save.name, else the run folder's name."""
    return cfg.save.name or Path(cfg.save.output_dir).expanduser().resolve().name or "lora"


def lora_filenames(cfg: RunConfig, step: int | None = None, *, ema: bool = False) -> dict[str, str]:
    """{format: file name}: the first format gets `<name>.safetensors`, others `<name>.<format>.safetensors`;
    with `step` (a checkpoint), `<name>-<step>` (six digits, as kohya numbers them); the EMA weights (ema)
    `<name>[-<step>]-ema`."""
    stem = run_name(cfg) + (f"-{step:06d}" if step is not None else "") + (EMA_SUFFIX if ema else "")
    return {fmt: f"{stem}.safetensors" if i == 0 else f"{stem}.{fmt}.safetensors"
            for i, fmt in enumerate(dict.fromkeys(cfg.save.formats))}


def check_finite(lora: dict[str, torch.Tensor]) -> None:
    bad = first_non_finite(lora)
    if bad is not None:
        raise SdloraError(f"refusing to save a LoRA with NaN/inf weights ({bad}); the previous file is kept")


def save_lora(folder: str | Path, components: SDComponents, cfg: RunConfig, metadata: dict[str, str], *,
              step: int | None = None, ema: bool = False) -> list[Path]:
    """Write the LoRA in every configured format into `folder` (step: a checkpoint's; ema: the EMA weights are
    in the model, named `-ema`); returns the paths. Trained token embeddings (pivotal tuning) are bundled
    into kohya files and/or written beside them as `<name>.emb.safetensors`, as embeddings.bundle /
    embeddings.standalone say."""
    lora = extract(components)
    emb = trained_embeddings(components) if cfg.embeddings.tokens else {}
    dtype = SAVE_DTYPES[cfg.save.precision]
    check_finite({**{k: t.to(dtype) for k, t in lora.items()},  # also catches values fp16 cannot hold
                  **{f"embedding {k}": t.to(dtype) for k, t in emb.items()}})
    metadata = {**metadata, **derived_metadata(canonical.group(lora))}  # rank/alpha as the tensors say
    bundled = emb if cfg.embeddings.bundle else None
    paths = [save_lora_file(Path(folder) / name, lora, metadata, fmt, dtype, embeddings=bundled)
             for fmt, name in lora_filenames(cfg, step, ema=ema).items()]
    if emb and cfg.embeddings.standalone:
        paths.append(save_standalone(standalone_path(paths[0]), emb, dtype,
                                     {"sdlora_version": __version__, "ss_output_name": run_name(cfg)}))
    return paths


@torch.no_grad()
def delta_norm(components: SDComponents, adapter: str = "default") -> float:
    """Frobenius norm of the LoRA's total weight change (DoRA included): ~0 means no effect."""
    total = 0.0
    for model in (components.unet, components.text_encoder):
        for wrapper in lora_modules(model).values():
            if adapter in wrapper.adapters:
                total += float(wrapper.delta_weight(adapter).pow(2).sum())
    return math.sqrt(total)


@torch.no_grad()
def base_norm(components: SDComponents) -> float:
    """Frobenius norm of the frozen weights that carry LoRA (the scale delta_norm is judged against)."""
    total = 0.0
    for model in (components.unet, components.text_encoder):
        for wrapper in lora_modules(model).values():
            total += float(wrapper.base.weight.detach().float().pow(2).sum())
    return math.sqrt(total)
