"""Stage 2 of sd-tiny pretraining: UNet and text encoder together, epsilon prediction on VAE latents.

The noise schedule is SD 1.4's (scaled_linear 0.00085-0.012, 1000 steps), taken from the bundled
scheduler config. Noising, targets and the loss are the LoRA trainer's own (sdlora.train.noise and
sdlora.train.loss), weighted with min-SNR (gamma 5), which speeds up convergence of small diffusion
models a lot; ~10% of captions are dropped to the empty prompt so that
classifier-free guidance works. The weights kept are an EMA of the trained ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel

from sdlora.models.architecture import sd14_config
from sdlora.train.loss import diffusion_loss
from sdlora.train.noise import NoiseSchedule, sample_noise, sample_timesteps
from sdlora.tiny.trainkit import (EMA, StageClock, StageOptions, autocast, log_line, lr_at,
                                  set_lr)

CAPTION_DROPOUT = 0.1
SNR_GAMMA = 5.0
EMA_DECAY = 0.999


@dataclass
class LatentData:
    """Everything stage 2 samples from, on the training device.

    mean/std: float16 (N, 4, 16, 16) posteriors; ids: int64 (U, 77) distinct captions, row 0 the
    empty one; index: int64 (N, V) caption row of each variant of each image."""

    mean: torch.Tensor
    std: torch.Tensor
    ids: torch.Tensor
    index: torch.Tensor
    scaling_factor: float


def sd14_schedule(device: str | torch.device = "cpu") -> NoiseSchedule:
    """SD 1.4's noise schedule (alpha-bar_t, float32 (1000,))."""
    return NoiseSchedule.from_config(sd14_config("scheduler"), device)


def sample_batch(data: LatentData, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled latents (B, 4, 16, 16) drawn from their posteriors, and caption ids (B, 77)."""
    device = data.mean.device
    index = torch.randint(len(data.mean), (batch_size,), device=device, generator=generator)
    variant = torch.randint(data.index.shape[1], (batch_size,), device=device, generator=generator)
    caption = data.index[index, variant]
    dropped = torch.rand(batch_size, device=device, generator=generator) < CAPTION_DROPOUT
    caption = torch.where(dropped, torch.zeros_like(caption), caption)
    noise = torch.randn((batch_size, *data.mean.shape[1:]), device=device, generator=generator)
    latents = (data.mean[index].float() + data.std[index].float() * noise) * data.scaling_factor
    return latents, data.ids[caption]


def step_loss(unet, text_encoder, latents, ids, schedule: NoiseSchedule, generator) -> torch.Tensor:
    """Min-SNR-weighted epsilon-prediction MSE at uniformly drawn timesteps (the trainer's loss)."""
    t = sample_timesteps(len(latents), generator, 0, schedule.num_timesteps, device=latents.device)
    eps = sample_noise(latents, generator)
    noisy = schedule.add_noise(latents, eps, t)  # q(x_t | x_0)
    with autocast(latents.device):
        context = text_encoder(ids)[0]  # (B, 77, hidden): last hidden state, as the pipeline uses
        pred = unet(noisy, t, context).sample
    return diffusion_loss(pred, eps, schedule.min_snr_weights(t, SNR_GAMMA, "epsilon"))


def train_unet(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, data: LatentData,
               options: StageOptions, *, seed: int = 0) -> list[str]:
    """Train `unet` and `text_encoder` in place (ending with their EMA weights); returns log lines."""
    device = data.mean.device
    modules = [unet, text_encoder]
    params = [p for m in modules for p in m.parameters()]
    for m in modules:
        m.train()
    optimizer = torch.optim.AdamW(params, lr=options.lr, betas=(0.9, 0.99), weight_decay=0.0,
                                  **({"fused": True} if device.type == "cuda" else {}))
    ema = EMA(modules, EMA_DECAY)
    schedule = sd14_schedule(device)
    generator = torch.Generator(device).manual_seed(seed)
    clock, step, lines = StageClock(options), 0, []
    while not clock.done(step):
        set_lr(optimizer, lr_at(options, step, clock.progress(step)))
        latents, ids = sample_batch(data, options.batch_size, generator)
        loss = step_loss(unet, text_encoder, latents, ids, schedule, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        ema.update(step)
        step += 1
        if step % options.log_every == 0 or clock.done(step):
            lines.append(log_line("unet", step, clock, loss=loss.item(), lr=optimizer.param_groups[0]["lr"]))
    ema.copy_to_model()
    for m in modules:
        m.eval()
    return lines
