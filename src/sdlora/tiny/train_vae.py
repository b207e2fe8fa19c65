"""Stage 1 of sd-tiny pretraining: the VAE, then its latent statistics.

Loss: L1 + MSE reconstruction, an L1 loss on image gradients (keeps shape edges sharp without a
perceptual network), and a small KL term that keeps the latents near a unit Gaussian. The VAE
sees plain and styled images: it is an image codec, like SD's VAE, and must be able to decode
the styles that LoRAs later teach the UNet (the UNet and text encoder only ever see plain ones).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from sdlora.tiny.trainkit import StageClock, StageOptions, autocast, log_line, lr_at, set_lr

KL_WEIGHT = 1e-4  # per latent element, relative to per-pixel reconstruction losses
EDGE_WEIGHT = 0.5


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 64, 64, 3) -> float (B, 3, 64, 64) in [-1, 1]."""
    return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _edges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def vae_loss(vae: AutoencoderKL, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Training loss of `vae` on images x (B, 3, 64, 64) in [-1, 1], with its parts."""
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.sample()).sample.float()  # (B, 3, 64, 64)
    l1 = F.l1_loss(recon, x)
    mse = F.mse_loss(recon, x)
    edge = sum(F.l1_loss(a, b) for a, b in zip(_edges(recon), _edges(x)))
    kl = posterior.kl().float().mean() / posterior.mean[0].numel()  # per latent element
    loss = l1 + mse + EDGE_WEIGHT * edge + KL_WEIGHT * kl
    return loss, {"l1": l1, "mse": mse, "edge": edge, "kl": kl}


def train_vae(vae: AutoencoderKL, images: torch.Tensor, options: StageOptions, *, seed: int = 0) -> list[str]:
    """Train `vae` in place on uint8 `images` (N, 64, 64, 3) already on the training device.

    Returns the progress lines it printed."""
    device = images.device
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=options.lr, betas=(0.9, 0.99), weight_decay=0.0,
                                  **({"fused": True} if device.type == "cuda" else {}))
    generator = torch.Generator(device).manual_seed(seed)
    clock, step, lines = StageClock(options), 0, []
    while not clock.done(step):
        set_lr(optimizer, lr_at(options, step, clock.progress(step)))
        index = torch.randint(len(images), (options.batch_size,), device=device, generator=generator)
        x = to_model_input(images[index])
        flip = torch.rand(len(x), device=device, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        with autocast(device):
            loss, parts = vae_loss(vae, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % options.log_every == 0 or clock.done(step):
            lines.append(log_line("vae", step, clock, loss=loss.item(), **{k: v.item() for k, v in parts.items()}))
    vae.eval()
    return lines


@torch.no_grad()
def encode_pool(vae: AutoencoderKL, images: torch.Tensor, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image: two float16 tensors (N, 4, 16, 16) on images' device."""
    device = images.device
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        with autocast(device):
            dist = vae.encode(to_model_input(images[start:start + batch_size])).latent_dist
        means.append(dist.mean.half())
        stds.append(dist.std.half())
    return torch.cat(means), torch.cat(stds)


def latent_scaling_factor(mean: torch.Tensor, std: torch.Tensor) -> float:
    """1 / the std of latents sampled from the posteriors (SD 1.x's 0.18215, measured for sd-tiny)."""
    variance = mean.float().var() + std.float().pow(2).mean()
    return float(1.0 / variance.sqrt())
