"""Building a run: the accelerator's models, data and caches, the LoRA, the optimizer, resumed state.

    load_and_cache   base model (frozen, low precision), DreamBooth class images, datasets, caches,
                     then the VAE / text encoder moved off the device or released
    make_trainable   LoRA injected (fp32), SDPA attention, gradient checkpointing
    build_run        optimizer, LR schedule, Accelerate (DDP), the step context, resumed state, data stream
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from sdlora.config import RunConfig, to_toml
from sdlora.train import checkpoint as ckpt
from sdlora.train import rng
from sdlora.train.batches import BatchStream
from sdlora.train.guard import NonFiniteGuard
from sdlora.train.noise import NoiseSchedule
from sdlora.train.optim import build_optimizer, build_scheduler, param_groups
from sdlora.train.progress import Progress
from sdlora.train.setup import (DTYPES, Data, attach_lora, check_compile_backend, enable_checkpointing, enable_sdpa,
                                load_model, lora_parameters, offload, prepare_data, speed_up_unet, trainable_models)
from sdlora.train.state import restore
from sdlora.train.step import StepContext
from sdlora.train.validation import Validator

CONFIG_FILE = "config.toml"


@dataclass
class Run:
    """Everything the loop touches, built once by build_run()."""

    cfg: RunConfig
    acc: object  # accelerate.Accelerator
    run_dir: Path
    components: object  # SDComponents (unwrapped modules)
    models: dict  # trainable networks by component name (unwrapped)
    ctx: StepContext
    optimizer: object
    scheduler: object
    stream: BatchStream
    guard: NonFiniteGuard
    progress: Progress
    validator: Validator
    val_batches: list[dict]
    total: int
    dataset: dict
    step: int = 0
    last_saved: int = -1
    validation_losses: dict[int, float] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


def load_and_cache(cfg: RunConfig, acc, run_dir: Path):
    """(components, data): the frozen base model with the datasets built and cached."""
    components = load_model(cfg.model.name, DTYPES[acc.mixed_precision])
    if acc.is_main_process:
        from sdlora.train.classgen import generate_class_images

        generate_class_images(cfg, components, acc.device)  # before any LoRA: the base model's images
    acc.wait_for_everyone()
    data = prepare_data(cfg, components, acc, cfg.data.cache_dir or str(run_dir / "cache"))
    place_models(components, acc.device, latents_cached=data.latents_cached, text_cached=data.text_cached,
                 keep_for_sampling=bool(cfg.validation.prompts))
    return components, data


def make_trainable(cfg: RunConfig, components) -> tuple[dict, dict]:
    """(trainable networks by component, LoRA module counts)."""
    rng.seed_all(cfg.train.seed)  # LoRA init does not depend on what loading and caching drew
    counts = attach_lora(components, cfg)
    enable_sdpa(components.unet)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(components, cfg.lora.train_text_encoder)
    t = cfg.train
    speed_up_unet(components.unet, channels_last=t.channels_last, compile=t.compile, backend=t.compile_backend)
    models = trainable_models(components, cfg)
    for model in models.values():
        model.train()
    return models, counts


def build_run(cfg: RunConfig, acc, resume: str | None) -> Run:
    run_dir = Path(cfg.save.output_dir)
    found = ckpt.resolve_resume(resume, run_dir) if resume else None  # a bad --resume fails before loading
    if cfg.train.compile:
        check_compile_backend(cfg.train.compile_backend)  # so does a bad backend
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write_text(run_dir / CONFIG_FILE, to_toml(cfg))
    progress = Progress(run_dir, enabled=acc.is_main_process, tensorboard=cfg.log.tensorboard,
                        every=cfg.log.every_n_steps)
    try:
        return assemble_run(cfg, acc, run_dir, found, progress)
    except BaseException:
        progress.close()  # a failed build must not leave its log file attached to the `sdlora` logger
        raise


def assemble_run(cfg: RunConfig, acc, run_dir: Path, found, progress: Progress) -> Run:
    """Model, data, LoRA, optimizer and (when resuming from `found`) the restored state."""
    rng.seed_all(cfg.train.seed)
    components, data = load_and_cache(cfg, acc, run_dir)
    models, counts = make_trainable(cfg, components)
    optimizer = build_optimizer(param_groups(models, cfg.train), cfg.train)
    sampler = make_sampler(cfg, data.train, acc)
    total = total_steps(cfg, len(sampler))
    scheduler = build_scheduler(optimizer, cfg.train, total)
    *wrapped, optimizer = acc.prepare(*models.values(), optimizer)
    ctx = step_context(cfg, acc, components, dict(zip(models, wrapped)), lora_parameters(models))
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps, acc.mixed_precision)
    step, stream_state = 0, {"epoch": 0, "global_position": 0}
    if found is not None:
        state = ckpt.load_state(found)
        step = restore(state, models=models, optimizer=optimizer, scheduler=scheduler, scaler=acc.scaler,
                       guard=guard, where=str(found.path))
        stream_state = state["stream"]
        progress.message(f"resumed from {found.path} at step {step}")
    stream = make_stream(cfg, data, sampler, stream_state, acc.num_processes)
    return Run(cfg=cfg, acc=acc, run_dir=run_dir, components=components, models=models, ctx=ctx,
               optimizer=optimizer, scheduler=scheduler, stream=stream, guard=guard, progress=progress,
               validator=Validator(cfg, components, acc.device, run_dir), val_batches=val_batches(cfg, data.val),
               total=total, dataset=data.train.summary(), step=step, last_saved=step if found else -1)


def step_context(cfg: RunConfig, acc, components, wrapped: dict, params: list) -> StepContext:
    """What train_step needs; `wrapped` are the accelerate-prepared (maybe DDP) trainable networks."""
    return StepContext(unet=wrapped["unet"], schedule=NoiseSchedule.from_config(components.scheduler.config, acc.device),
                       cfg=cfg.train, device=acc.device, weight_dtype=DTYPES[acc.mixed_precision],
                       text_encoder=wrapped.get("text_encoder", components.text_encoder),
                       train_text_encoder=cfg.lora.train_text_encoder, vae=components.vae,
                       vae_scaling=float(components.vae.config.scaling_factor), params=params,
                       rank=acc.process_index)


def make_stream(cfg: RunConfig, data: Data, sampler, stream_state: dict, num_processes: int) -> BatchStream:
    from sdlora.data import collate

    epoch, position = BatchStream.resume_position(stream_state, num_processes)
    workers = 0 if data.latents_cached else cfg.data.num_workers  # cached items cost nothing to load
    return BatchStream(data.train, sampler, collate, num_workers=workers, epoch=epoch, position=position)


def place_models(components, device, *, latents_cached: bool, text_cached: bool, keep_for_sampling: bool) -> None:
    """UNet on the device; VAE / text encoder there only when the step still needs them, else on
    the CPU for validation samples, or released entirely when nothing will use them again."""
    components.unet.to(device)
    for module, cached in ((components.vae, latents_cached), (components.text_encoder, text_cached)):
        if not cached:
            module.to(device)
        else:
            offload(module, keep=keep_for_sampling)


def make_sampler(cfg: RunConfig, dataset, acc, shuffle: bool = True):
    from sdlora.data import BucketBatchSampler

    return BucketBatchSampler(dataset, cfg.train.batch_size, seed=cfg.train.seed, num_replicas=acc.num_processes,
                              rank=acc.process_index, shuffle=shuffle)


def val_batches(cfg: RunConfig, dataset) -> list[dict]:
    """The held-out set as fixed batches (no shuffling: the same batches at every validation)."""
    if dataset is None or not cfg.validation.loss_every_n_steps:
        return []
    from sdlora.data import BucketBatchSampler, collate

    sampler = BucketBatchSampler(dataset, cfg.train.batch_size, seed=cfg.train.seed, shuffle=False)
    return [collate([dataset[i] for i in batch]) for batch in sampler]


def total_steps(cfg: RunConfig, batches_per_epoch: int) -> int:
    if cfg.train.epochs is not None:
        return cfg.train.epochs * max(1, math.ceil(batches_per_epoch / cfg.train.grad_accum))
    return cfg.train.steps
