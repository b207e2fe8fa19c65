"""Building a run, one phase after another, each in its own module:

    resume     the checkpoint to continue, checked against the new settings (train/resume.py)
    model      base model, frozen, in the run's precision; the image sizes it accepts (train/model.py)
    -- only now is the run folder written: config.toml, train.log --
    data       DreamBooth class images, datasets, caches; encoders placed or released (train/inputs.py)
    adapters   the LoRA injected (fp32), attention / checkpointing / compile (train/adapters.py)
    optimizer  parameter groups, optimizer, LR schedule, Accelerate (train/optim.py)
    state      the resumed training state, and the batch stream positioned after it (train/state.py)

The main process holds the run folder's lock (train/runlock.py) from before the first phase until
the run ends, so two runs never share one folder.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from sdlora.config import RunConfig, to_toml
from sdlora.dtypes import DTYPES
from sdlora.errors import SdloraError
from sdlora.train import checkpoint as ckpt
from sdlora.train import embeddings as new_tokens
from sdlora.train import rng
from sdlora.train.adapters import attach_lora, block_lr, lora_parameters, trainable_models
from sdlora.train.batches import BatchStream
from sdlora.train.convs import choose as choose_convs
from sdlora.train import lowmem
from sdlora.train.lowmem import choose as choose_memory
from sdlora.train.ema import EMA, build_ema
from sdlora.train.guard import NonFiniteGuard
from sdlora.train.inputs import Data, make_sampler, make_stream, prepare_data, total_steps, val_batches
from sdlora.train.model import (check_compile_backend, check_sizes, enable_checkpointing, enable_sdpa, load_model,
                                place_models, speed_up_unet)
from sdlora.train.noise import NoiseSchedule
from sdlora.train.optim import build_optimizer, build_scheduler, param_groups
from sdlora.train.precision import Choice
from sdlora.train.progress import Progress, check_wandb, wandb_tracker
from sdlora.train.resume import complete_message, open_resume
from sdlora.train.runlock import RunLock
from sdlora.train.state import restore
from sdlora.train.step import StepContext
from sdlora.train.validation import Validator

CONFIG_FILE = "config.toml"
__all__ = ["CONFIG_FILE", "Run", "build_run", "make_trainable", "place_models"]


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
    lock: RunLock | None = None
    ema: EMA | None = None  # the moving average of the LoRA (ema.enabled)
    precision: Choice | None = None  # the run's precision and why (train/setup.run_precision)

    def close(self) -> None:
        """Release what the run holds outside itself: the log file and the run folder's lock."""
        self.progress.close()
        if self.lock is not None:
            self.lock.release()


def build_run(cfg: RunConfig, acc, resume: str | None) -> Run:
    """Lock the run folder, then build the run phase by phase; on failure the lock and log are released."""
    run_dir = Path(cfg.save.output_dir)
    lock = RunLock(run_dir).acquire() if acc.is_main_process else None
    progress = None
    try:
        found, state = open_resume(resume, cfg) if resume else (None, None)  # a bad --resume fails first
        if cfg.train.compile:
            check_compile_backend(cfg.train.compile_backend)  # so does a bad backend
        if cfg.log.wandb:
            check_wandb()  # and a missing wandb package
        rng.seed_all(cfg.train.seed)
        components = load_model(cfg.model.name, DTYPES[acc.mixed_precision])
        check_sizes(cfg, components)
        progress = open_run_folder(cfg, acc, run_dir, resuming=found is not None)
        run = assemble_run(cfg, acc, run_dir, components, progress, found, state)
        run.lock = lock
        return run
    except BaseException:
        if progress is not None:
            progress.close()  # a failed build must not leave its log file attached to the `sdlora` logger
        if lock is not None:
            lock.release()
        raise


def open_run_folder(cfg: RunConfig, acc, run_dir: Path, *, resuming: bool = False) -> Progress:
    """The first writes to the run folder: the resolved config.toml and the log (main process); a
    resumed run continues its W&B run."""
    if acc.is_main_process:
        try:
            ckpt.atomic_write_text(run_dir / CONFIG_FILE, to_toml(cfg))
        except OSError as exc:
            raise SdloraError(f"{run_dir / CONFIG_FILE}: cannot write the run's config ({exc.strerror or exc}); "
                              "choose a writable --output") from None
    trackers = [open_wandb(cfg, run_dir, resuming=resuming)] if cfg.log.wandb and acc.is_main_process else []
    return Progress(run_dir, enabled=acc.is_main_process, tensorboard=cfg.log.tensorboard, every=cfg.log.every_n_steps,
                    trackers=trackers)


def open_wandb(cfg: RunConfig, run_dir: Path, *, resuming: bool = False):
    """The W&B run (log.wandb): named after the LoRA unless log.wandb_run_name says otherwise; a resumed
    run continues the W&B run its folder started (train/progress.wandb_run_id)."""
    from sdlora.config import to_dict
    from sdlora.train.export import run_name

    return wandb_tracker(run_dir, project=cfg.log.wandb_project, name=cfg.log.wandb_run_name or run_name(cfg),
                         config=to_dict(cfg), resuming=resuming)


def assemble_run(cfg: RunConfig, acc, run_dir: Path, components, progress: Progress, found, state) -> Run:
    """The data, adapters, optimizer and state phases over the loaded base model."""
    new_tokens.install(cfg, components)  # pivotal tuning: before any caption is tokenized
    data = load_data(cfg, acc, components, run_dir)
    models, _ = make_trainable(cfg, components)  # the start summary (train/loop.announce) counts modules
    optimizer = build_optimizer(new_tokens.split_groups(param_groups(models, cfg.train, block_lr(cfg)), cfg, components),
                                cfg.train)
    sampler = make_sampler(cfg, data.train, acc)
    total = total_steps(cfg, len(sampler))
    scheduler = build_scheduler(optimizer, cfg.train, total)
    *wrapped, optimizer = acc.prepare(*models.values(), optimizer)
    ctx = step_context(cfg, acc, components, dict(zip(models, wrapped)), lora_parameters(models))
    if ctx.memory.on:  # (its recomputation must keep no convolution inputs either)
        lowmem.apply(components.unet, checkpoint_everything=cfg.train.gradient_checkpointing)
    guard = NonFiniteGuard(cfg.train.max_nonfinite_steps, acc.mixed_precision)
    ema = build_ema(cfg, models)
    step, stream_state = 0, {"epoch": 0, "global_position": 0}
    if found is not None:
        step = restore(state, models=models, optimizer=optimizer, scheduler=scheduler, scaler=acc.scaler,
                       guard=guard, where=str(found.path), ema=ema)
        if step >= total:
            raise SdloraError(complete_message(step, found, "train.epochs", cfg.train.epochs or 0))
        stream_state = state["stream"]
        progress.message(f"resumed from {found.path} at step {step}")
    stream = make_stream(cfg, data, sampler, stream_state, acc.num_processes)
    return Run(cfg=cfg, acc=acc, run_dir=run_dir, components=components, models=models, ctx=ctx,
               optimizer=optimizer, scheduler=scheduler, stream=stream, guard=guard, progress=progress,
               validator=Validator(cfg, components, acc.device, run_dir), val_batches=val_batches(cfg, data.val),
               total=total, dataset=data.train.summary(), step=step, last_saved=step if found else -1, ema=ema)


def load_data(cfg: RunConfig, acc, components, run_dir: Path) -> Data:
    """Class images (from the base model, before any LoRA), datasets and caches; encoders placed."""
    if acc.is_main_process:
        from sdlora.train.classgen import generate_class_images

        generate_class_images(cfg, components, acc.device)
    acc.wait_for_everyone()
    data = prepare_data(cfg, components, acc, cfg.data.cache_dir or str(run_dir / "cache"))
    place_models(components, acc.device, latents_cached=data.latents_cached, text_cached=data.text_cached,
                 keep_for_sampling=bool(cfg.validation.prompts))
    return data


def make_trainable(cfg: RunConfig, components) -> tuple[dict, dict]:
    """(trainable networks by component, LoRA module counts)."""
    rng.seed_all(cfg.train.seed)  # LoRA init does not depend on what loading and caching drew
    counts = attach_lora(components, cfg)
    new_tokens.mark_trainable(cfg, components)
    enable_sdpa(components.unet)
    if cfg.train.gradient_checkpointing:
        enable_checkpointing(components, cfg.lora.train_text_encoder)
    t = cfg.train
    speed_up_unet(components.unet, channels_last=t.channels_last, compile=t.compile, backend=t.compile_backend)
    models = new_tokens.trainable_models(cfg, components, trainable_models(components, cfg))
    for model in models.values():
        model.train()
    return models, counts


def step_context(cfg: RunConfig, acc, components, wrapped: dict, params: list) -> StepContext:
    """What train_step needs; `wrapped` are the accelerate-prepared (maybe DDP) trainable networks."""
    schedule = NoiseSchedule.from_config(components.scheduler.config, acc.device, cfg.train.zero_terminal_snr)
    unet_size = sum(p.numel() for p in components.unet.parameters())
    return StepContext(unet=wrapped["unet"], schedule=schedule,
                       cfg=cfg.train, device=acc.device, weight_dtype=DTYPES[acc.mixed_precision],
                       text_encoder=wrapped.get("text_encoder", components.text_encoder),
                       train_text_encoder=cfg.lora.train_text_encoder or new_tokens.enabled(cfg), vae=components.vae,
                       vae_scaling=float(components.vae.config.scaling_factor), params=params,
                       rank=acc.process_index,
                       convs=choose_convs(cfg.train.conv_backend, acc.device.type, acc.mixed_precision),
                       memory=choose_memory(cfg.train.low_memory, acc.device.type, acc.mixed_precision,
                                            unet_size, cfg.train.compile))


