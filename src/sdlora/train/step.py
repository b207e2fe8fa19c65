"""One optimizer step: forward/backward over the micro-batches, guard, clip, update.

This is the code path the loop runs and the benchmark times. Randomness (noise, timesteps, VAE
sampling) comes from a generator derived from (seed, step, micro-batch, process rank), so a
resumed run draws exactly what an uninterrupted one does.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from sdlora.config import TrainConfig
from sdlora.lora import multiplier
from sdlora.train import rng
from sdlora.train.convs import ConvChoice, conv_kernels
from sdlora.train.lowmem import MemoryChoice, forward_mode, trim_heap
from sdlora.train.loss import debiased_weights, diffusion_loss, huber_threshold, item_weights
from sdlora.train.noise import NoiseSchedule, perturb_input, pyramid_noise, sample_noise, sample_timesteps

TRAINED_ADAPTER = "default"  # the adapter name the trainer injects (sdlora.lora.inject's default)


@dataclass
class StepContext:
    """Everything a step needs that stays fixed during training."""

    unet: nn.Module  # may be wrapped for DDP
    schedule: NoiseSchedule
    cfg: TrainConfig
    device: torch.device
    weight_dtype: torch.dtype  # dtype of the frozen weights (fp32/fp16/bf16)
    text_encoder: nn.Module | None = None  # needed unless text embeddings are cached
    train_text_encoder: bool = False
    vae: nn.Module | None = None  # needed unless latents are cached
    vae_scaling: float = 0.18215
    params: list[torch.Tensor] = field(default_factory=list)  # trainable, fp32
    rank: int = 0
    convs: ConvChoice = ConvChoice(False, "PyTorch's default")  # the CPU convolution kernels (train/convs.py)
    memory: MemoryChoice = MemoryChoice(False, "PyTorch's default")  # the CPU step's memory savings (train/lowmem.py)


@dataclass
class StepResult:
    loss: float  # mean over micro-batches and processes (nan when non-finite)
    grad_norm: float | None  # before clipping; None when the update was skipped for a non-finite loss
    skipped: bool  # True: non-finite loss or gradients, the LoRA was not changed


def encode_text(ctx: StepContext, batch: dict) -> torch.Tensor:
    """Text conditioning (B, 77, D): cached embeddings, or the text encoder run on input_ids."""
    if "encoder_hidden_states" in batch:
        return batch["encoder_hidden_states"].to(ctx.device, ctx.weight_dtype)
    ids = batch["input_ids"].to(ctx.device)
    grad = torch.enable_grad() if ctx.train_text_encoder else torch.no_grad()
    with grad:
        return ctx.text_encoder(ids)[0]


@torch.no_grad()
def encode_latents(ctx: StepContext, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """Scaled VAE latents (B, 4, H/8, W/8) float32: cached, or sampled from the VAE posterior."""
    if "latents" in batch:
        return batch["latents"].to(ctx.device, torch.float32)
    pixels = batch["pixel_values"].to(ctx.device, ctx.weight_dtype)  # (B, 3, H, W) in [-1, 1]
    dist = ctx.vae.encode(pixels).latent_dist
    return (dist.sample(generator) * ctx.vae_scaling).float()


def draw_noise(cfg: TrainConfig, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The target noise (B, 4, h, w): Gaussian, plus the configured offset and pyramid levels."""
    noise = sample_noise(latents, generator, cfg.noise_offset)
    if cfg.multires_noise_iterations:
        noise = pyramid_noise(noise, generator, cfg.multires_noise_iterations, cfg.multires_noise_discount)
    return noise


def draw_timesteps(cfg: TrainConfig, batch: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return sample_timesteps(batch, generator, cfg.timestep_min, cfg.timestep_max, device, cfg.timestep_sampling,
                            cfg.logit_mean, cfg.logit_std, cfg.timestep_shift)


def timestep_weights(cfg: TrainConfig, schedule: NoiseSchedule, t: torch.Tensor) -> torch.Tensor | None:
    """Min-SNR and debiased-estimation weights (B,) multiplied, or None when both are off."""
    weights = None
    if cfg.min_snr_gamma:
        weights = schedule.min_snr_weights(t, cfg.min_snr_gamma, cfg.prediction_type)
    if cfg.debiased_estimation:
        debias = debiased_weights(schedule.snr(t), cfg.prediction_type)
        weights = debias if weights is None else weights * debias
    return weights


@torch.no_grad()
def base_targets(ctx: StepContext, batch: dict, noisy: torch.Tensor, t: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
    """`target` with the class items' rows replaced by the frozen model's prediction (the LoRA at
    multiplier 0, text encoder included) for the same noisy latent, timestep and prompt
    (train.prior_target = "base": prior preservation as "change nothing here")."""
    rows = batch["is_class"].to(target.device).bool()
    with multiplier([ctx.unet] + ([ctx.text_encoder] if ctx.train_text_encoder else []), TRAINED_ADAPTER, 0.0):
        if "encoder_hidden_states" in batch:
            hidden = batch["encoder_hidden_states"][rows.cpu()].to(ctx.device, ctx.weight_dtype)
        else:  # not encode_text: it enables gradients for a trained text encoder
            hidden = ctx.text_encoder(batch["input_ids"][rows.cpu()].to(ctx.device))[0]
        base = ctx.unet(noisy[rows].to(ctx.weight_dtype), t[rows], hidden).sample
    target = target.clone()
    target[rows] = base.detach().to(target.dtype)
    return target


def compute_loss(ctx: StepContext, batch: dict, generator: torch.Generator) -> torch.Tensor:
    """The weighted diffusion loss of one micro-batch (a scalar with a graph to the LoRA weights).

    batch["loss_mask"], when present: float32 (B, 1, h, w) in [0, 1] at latent resolution, weighs each
    latent pixel (an all-black mask gives its sample a loss of 0 and no gradient)."""
    cfg, schedule = ctx.cfg, ctx.schedule
    latents = encode_latents(ctx, batch, generator)  # (B, 4, h, w)
    noise = draw_noise(cfg, latents, generator)
    t = draw_timesteps(cfg, latents.shape[0], generator, ctx.device)
    model_noise = perturb_input(noise, generator, cfg.ip_noise_gamma) if cfg.ip_noise_gamma else noise
    noisy = schedule.add_noise(latents, model_noise, t)
    target = schedule.target(latents, noise, t, cfg.prediction_type)
    hidden = encode_text(ctx, batch)
    if cfg.prior_target == "base" and batch.get("is_class") is not None and bool(batch["is_class"].any()):
        target = base_targets(ctx, batch, noisy, t, target)
    pred = ctx.unet(noisy.to(ctx.weight_dtype), t, hidden).sample  # (B, 4, h, w)
    weights = item_weights(batch.get("is_class"), latents.shape[0], cfg.prior_loss_weight,
                           timestep_weights(cfg, schedule, t), ctx.device)
    huber_c = None
    if cfg.loss_type in ("huber", "smooth_l1"):
        huber_c = huber_threshold(cfg.huber_schedule, cfg.huber_c, t, schedule.snr(t), schedule.num_timesteps)
    return diffusion_loss(pred, target, weights, cfg.loss_type, huber_c, batch.get("loss_mask"))


def _no_sync(accelerator, models: list[nn.Module], sync: bool):
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulation."""
    stack = contextlib.ExitStack()
    if not sync:
        for model in models:
            stack.enter_context(accelerator.no_sync(model))
    return stack


def train_step(accelerator, ctx: StepContext, micro_batches: list[dict], optimizer, scheduler,
               step: int) -> StepResult:
    """Accumulate gradients over `micro_batches`, then one guarded, clipped optimizer update."""
    models = [ctx.unet] + ([ctx.text_encoder] if ctx.train_text_encoder else [])
    losses = []
    for i, batch in enumerate(micro_batches):
        g = rng.generator(ctx.cfg.seed, "noise", step, i, ctx.rank, device=ctx.device)
        low = ctx.memory.on
        with _no_sync(accelerator, models, sync=i == len(micro_batches) - 1), conv_kernels(ctx.convs.native):
            _trim(low)  # the heap's free blocks from the last step (or caching) are not kept resident
            with accelerator.autocast(), forward_mode(low):
                loss = compute_loss(ctx, batch, g)
            _trim(low)  # nor the forward's freed temporaries while backward runs
            accelerator.backward(loss / len(micro_batches))
        losses.append(loss.detach().float())
    # one all-reduce: mean loss over processes (NaN anywhere makes it NaN everywhere, so all skip together)
    mean_loss = accelerator.reduce(torch.stack(losses).mean(), reduction="mean").item()
    if not math.isfinite(mean_loss):
        return _skip(optimizer, scheduler, mean_loss, None)
    max_norm = ctx.cfg.max_grad_norm if ctx.cfg.max_grad_norm > 0 else float("inf")
    grad_norm = float(accelerator.clip_grad_norm_(ctx.params, max_norm))
    if not math.isfinite(grad_norm) and accelerator.scaler is None:
        return _skip(optimizer, scheduler, mean_loss, grad_norm)
    optimizer.step()  # with an fp16 GradScaler, an overflowing step is skipped (and the scale lowered) here
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepResult(mean_loss, grad_norm, skipped=False)


def _trim(on: bool) -> None:
    if on:
        trim_heap()


def _skip(optimizer, scheduler, loss: float, grad_norm: float | None) -> StepResult:
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()  # the schedule stays a function of the step count
    return StepResult(loss, grad_norm, skipped=True)
