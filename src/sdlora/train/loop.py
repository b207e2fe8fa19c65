"""The training loop. `train(cfg)` reads top to bottom: build the run, step until done, finish.

    build_run   (train/build.py) base model, class images, data + caches, LoRA, optimizer, resumed state
    run_loop    per step: reseed, draw grad_accum micro-batches, train_step, guard, log, save, validate
    finish      final LoRA + checkpoint, final samples, the no-effect check, a summary

Only the main process writes files and logs; every process runs the same steps (DDP keeps the
LoRA weights identical, which finish() verifies).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sdlora.config import RunConfig, to_toml
from sdlora.errors import SdloraError
from sdlora.lora import lora_modules
from sdlora.train import checkpoint as ckpt
from sdlora.train import rng
from sdlora.train.build import CONFIG_FILE, Run, build_run
from sdlora.train.ema import ema_metadata
from sdlora.train.export import (base_norm, caption_warning, delta_norm, lora_metadata, save_lora, tag_frequency,
                                 uncaptioned)
from sdlora.train.guard import StopRequest, is_oom, oom_message
from sdlora.train.optim import averaged_weights
from sdlora.train.precision import choose as choose_precision
from sdlora.train.progress import continue_command, plural, start_summary
from sdlora.train.setup import make_accelerator, release_accelerator, resumed_precision, run_precision
from sdlora.train.state import training_state
from sdlora.train.step import StepResult, train_step
from sdlora.train.validation import lora_multiplier, validation_loss

log = logging.getLogger("sdlora.train")
__all__ = ["CONFIG_FILE", "TrainResult", "train"]
NO_EFFECT_RELATIVE = 1e-6  # |delta W| / |W| below this: the LoRA changes nothing


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    status: str  # "done" | "interrupted"
    lora_files: list[Path] = field(default_factory=list)
    checkpoint: Path | None = None
    nonfinite_steps: int = 0
    validation_losses: dict[int, float] = field(default_factory=dict)  # step -> held-out loss
    delta_norm: float = 0.0
    warnings: list[str] = field(default_factory=list)


def train(cfg: RunConfig, *, resume: str | None = None,
          on_step: Callable[[int, StepResult], None] | None = None) -> TrainResult:
    """Train a LoRA as `cfg` says (resume: "latest", a run folder or a checkpoint folder)."""
    precision = run_precision(cfg, resumed_precision(cfg, resume))
    acc = make_accelerator(cfg, precision)
    run = None
    try:
        run = build_run(cfg, acc, resume)
        run.precision = precision
        status = run_loop(run, on_step)
        return finish(run, status)
    except Exception as exc:
        error = SdloraError(oom_message(cfg, acc.mixed_precision)) if is_oom(exc) else exc
        if run is not None:
            run.progress.fatal(error)  # train.log tells how the run ended
        if error is not exc:
            raise error from None
        raise
    finally:
        if run is not None:
            run.close()
        run = None  # the DDP wrapper's reducer holds the process group: it must go before the group does
        release_accelerator(acc)


# ----------------------------------------------------------------------------- loop

def run_loop(run: Run, on_step: Callable[[int, StepResult], None] | None) -> str:
    """Step until run.total; returns "done", or "interrupted" after Ctrl-C (a checkpoint is saved)."""
    cfg, acc = run.cfg, run.acc
    announce(run)
    run.progress.start(run.total, run.step)
    if run.validator.enabled:
        sample_grid(run, base=True)
    if run.val_batches:
        log_validation_loss(run)  # the baseline the later values compare to
    with StopRequest() as stop:
        while run.step < run.total:
            epoch = run.stream.epoch
            micro = [next(run.stream) for _ in range(cfg.train.grad_accum)]
            rng.seed_step(cfg.train.seed, run.step, acc.process_index)  # LoRA dropout masks of this step
            lr = run.optimizer.param_groups[0]["lr"]
            result = train_step(acc, run.ctx, micro, run.optimizer, run.scheduler, run.step)
            run.step += 1
            run.guard.update(result.skipped, run.step)
            run.progress.step(run.step, result.loss, lr, result.grad_norm, result.skipped)
            after_step(run, epoch_done=run.stream.epoch > epoch)
            if on_step is not None:
                on_step(run.step, result)
            if any_process(acc, stop.requested):
                save_checkpoint(run)
                return "interrupted"
    return "done"


def announce(run: Run) -> None:
    """The start summary in words, and which precision and why."""
    cfg, acc = run.cfg, run.acc
    modules = {"unet": len(lora_modules(run.components.unet))}
    if cfg.lora.train_text_encoder:
        modules["text_encoder"] = len(lora_modules(run.components.text_encoder))
    choice = run.precision or choose_precision(cfg.train.mixed_precision, acc.device.type)
    run.progress.message(start_summary(
        params=sum(p.numel() for p in run.ctx.params), modules=modules, steps=run.total, start=run.step,
        batch_size=cfg.train.batch_size, grad_accum=cfg.train.grad_accum, processes=acc.num_processes,
        precision=choice.name, device=str(acc.device)))
    run.progress.message(f"precision {choice.name}: {choice.reason}")
    if acc.device.type == "cpu":
        run.progress.message(f"convolutions {run.ctx.convs.name}: {run.ctx.convs.reason}")
        run.progress.message(f"memory {run.ctx.memory.name}: {run.ctx.memory.reason}")
    if run.ema is not None:
        e = cfg.ema
        run.progress.message(f"EMA of the LoRA weights: decay {e.decay:g}{' with warm-up' if e.warmup else ''}, every "
                             f"{plural(e.every_n_steps, 'step')}, kept on {'the CPU' if e.on_cpu else str(acc.device)}"
                             f"{', used for the samples' if e.use_for_samples else ''}")
    missing, total = uncaptioned(run.stream.dataset)
    warning = caption_warning(run.stream.dataset)
    if warning:
        run.progress.message(warning, logging.WARNING)
    elif missing:
        run.progress.message(f"{missing} of {total} training images have no caption (they train on the caption "
                             "prefix only)")


def after_step(run: Run, *, epoch_done: bool) -> None:
    """Periodic work after optimizer step run.step: EMA update, checkpoint, sample grid, validation loss."""
    s, v, step = run.cfg.save, run.cfg.validation, run.step
    if run.ema is not None:
        run.ema.update(run.models, step)
    by_steps = s.every_n_steps > 0 and step % s.every_n_steps == 0
    since_saved = step - max(run.last_saved, 0)  # (last_saved: -1 until a save or a resume)
    by_epochs = (epoch_done and s.every_n_epochs > 0 and run.stream.epoch % s.every_n_epochs == 0
                 and since_saved >= s.min_epoch_steps)
    if (by_steps or by_epochs) and step < run.total:
        save_checkpoint(run)
    if run.validator.enabled and v.every_n_steps > 0 and step % v.every_n_steps == 0 and step < run.total:
        sample_grid(run)
    if run.val_batches and v.loss_every_n_steps > 0 and step % v.loss_every_n_steps == 0:
        log_validation_loss(run)


def any_process(acc, flag: bool) -> bool:
    """True on every process when `flag` is set on any (so all stop at the same step)."""
    if acc.num_processes == 1:
        return flag
    return bool(acc.reduce(torch.tensor(float(flag), device=acc.device), reduction="sum").item() > 0)


def save_checkpoint(run: Run) -> Path | None:
    """checkpoints/step-N with the LoRA files and (save.save_state) the training state; main process only."""
    run.last_saved = run.step
    if not run.acc.is_main_process:
        return None
    cfg = run.cfg

    def write(folder: Path) -> None:
        save_files(run, folder, step=run.step)  # (schedule-free: the state below keeps the training weights)
        if cfg.save.save_state:
            state = training_state(step=run.step, stream=run.stream.state(), models=run.models,
                                   optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.acc.scaler,
                                   guard=run.guard, num_processes=run.acc.num_processes, config=to_toml(cfg),
                                   ema=run.ema, precision=run.acc.mixed_precision)
            ckpt.atomic_torch_save(folder / ckpt.STATE_FILE, state)

    written = ckpt.write_checkpoint(run.run_dir, run.step, write)
    ckpt.prune(run.run_dir, cfg.save.keep_last)
    run.progress.message(f"step {run.step}: checkpoint saved to {written.path}")
    return written.path


def save_files(run: Run, folder: Path, step: int | None = None) -> list[Path]:
    """The LoRA files (every save.formats) into `folder`, then, with ema.enabled, the EMA's `-ema` files."""
    with averaged_weights(run.optimizer):  # schedule-free: the averaged weights, the training ones restored after
        files = save_lora(folder, run.components, run.cfg, metadata(run), step=step)
    if run.ema is not None:
        with run.ema.applied(run.models):
            files += save_lora(folder, run.components, run.cfg, {**metadata(run), **ema_metadata(run.ema)},
                               step=step, ema=True)
    return files


def metadata(run: Run) -> dict[str, str]:
    if "tag_frequency" not in run.dataset:  # once per run: kohya's ss_tag_frequency
        run.dataset["tag_frequency"] = tag_frequency(run.stream.dataset)
    return lora_metadata(run.cfg, step=run.step, epoch=run.stream.epoch, dataset=run.dataset,
                         base=run.components.source, started=run.started, num_processes=run.acc.num_processes,
                         precision=run.acc.mixed_precision)


def sample_grid(run: Run, *, base: bool = False):
    """Validation samples (main process); base=True samples the untrained model (LoRA multiplier 0)."""
    if not run.acc.is_main_process:
        return None
    step = 0 if base else run.step
    ema = not base and run.ema is not None and run.cfg.ema.use_for_samples
    with lora_disabled(run.components, base), averaged_weights(run.optimizer), \
            (run.ema.applied(run.models) if ema else contextlib.nullcontext()):
        sheet, arrays = run.validator.grid(step, base=base, ema=ema)
    run.progress.image("samples/base" if base else "samples/ema" if ema else "samples/lora", sheet, step)
    return arrays


def lora_disabled(components, disabled: bool):
    return lora_multiplier(components, 0.0 if disabled else None)


def log_validation_loss(run: Run) -> None:
    if not run.acc.is_main_process:
        return
    ctx = dataclasses.replace(run.ctx, unet=run.components.unet, text_encoder=run.components.text_encoder)
    with averaged_weights(run.optimizer):
        value = validation_loss(ctx, run.val_batches, run.cfg.validation.seed, run.acc.autocast)
    run.validation_losses[run.step] = value
    run.progress.scalars(run.step, {"validation/loss": value})
    run.progress.message(f"step {run.step}: validation loss {value:.5f}")


# ----------------------------------------------------------------------------- finish

def finish(run: Run, status: str) -> TrainResult:
    result = TrainResult(run.run_dir, run.step, status, nonfinite_steps=run.guard.total,
                         validation_losses=dict(run.validation_losses))
    if status == "interrupted":
        result.checkpoint = ckpt.checkpoint_dir(run.run_dir, run.step)
        run.progress.end_bar()
        run.progress.message(f"interrupted at step {run.step} (checkpoint {result.checkpoint}); to continue:\n"
                             f"  {continue_command(run.run_dir)}")
        return result
    if run.acc.is_main_process:
        result.lora_files = save_files(run, run.run_dir)
        if run.last_saved != run.step:
            save_checkpoint(run)
        result.checkpoint = ckpt.checkpoint_dir(run.run_dir, run.step)
        result.delta_norm, found = no_effect_check(run)
        result.warnings = [w for w in [caption_warning(run.stream.dataset)] if w] + found
    check_replicas_agree(run)
    run.progress.end_bar()  # the last line says where the LoRA is, with no bar redrawn after it
    for warning in result.warnings:
        run.progress.message(warning, logging.WARNING)
    skipped = f" ({run.guard.total} skipped as non-finite)" if run.guard.total else ""
    files = ", ".join(str(p) for p in result.lora_files) or str(run.run_dir)
    run.progress.message(f"done: {run.step} steps{skipped}. The LoRA is {files}")
    return result


def no_effect_check(run: Run) -> tuple[float, list[str]]:
    """Warn loudly when the LoRA's weight change is ~0 or the final samples equal the base model's."""
    with averaged_weights(run.optimizer):
        norm, base = delta_norm(run.components), base_norm(run.components)
    warnings = []
    if norm <= NO_EFFECT_RELATIVE * max(base, 1e-12):
        warnings.append(f"WARNING: the LoRA changes nothing (weight delta norm {norm:.3g}, relative "
                        f"{norm / max(base, 1e-12):.2g}); check train.lr, the number of steps and lora.* settings")
    if run.validator.enabled:
        arrays = sample_grid(run)
        if arrays is not None and run.validator.identical_to_base(arrays):
            ema = " (these are the EMA's samples: lower ema.decay for a run this short)" if (
                run.ema is not None and run.cfg.ema.use_for_samples) else ""
            warnings.append("WARNING: validation samples are pixel-identical to the base model's: the LoRA has "
                            f"no visible effect (train longer, raise train.lr or lora.rank){ema}")
    return norm, warnings


def check_replicas_agree(run: Run) -> None:
    """All processes must end with the same LoRA (DDP averages gradients); a checksum proves it."""
    if run.acc.num_processes == 1:
        return
    local = torch.stack([p.detach().double().sum() for p in run.ctx.params]).sum().to(run.acc.device)
    sums = run.acc.gather(local.reshape(1)).tolist()
    if max(sums) != min(sums):
        raise SdloraError(f"processes ended with different LoRA weights (checksums {sums}); this is a bug")
    run.progress.message(f"LoRA weights identical on all {run.acc.num_processes} processes (checksum {sums[0]:.10g})")
