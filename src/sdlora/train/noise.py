"""The DDPM forward process used for training: timesteps, noising, targets and SNR weights.

The schedule comes from the model's own scheduler config (SD 1.4: scaled_linear betas from 0.00085
to 0.012 over 1000 steps), so `alphas_cumprod` matches what the sampler assumes:

    x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps          (B, 4, h, w)
    epsilon target: eps;   v target: sqrt(abar_t) * eps - sqrt(1 - abar_t) * x_0
    SNR(t) = abar_t / (1 - abar_t)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from sdlora.errors import SdloraError

PREDICTION_TYPES = ("epsilon", "v_prediction")


def make_betas(config: dict) -> torch.Tensor:
    """Betas (T,) float64 from a diffusers scheduler config (linear / scaled_linear / trained_betas)."""
    n = int(config.get("num_train_timesteps", 1000))
    if config.get("trained_betas") is not None:
        return torch.tensor(config["trained_betas"], dtype=torch.float64)
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":
        return torch.linspace(start, end, n, dtype=torch.float64)
    if kind == "scaled_linear":  # the LDM / SD schedule: linear in sqrt(beta)
        return torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
    raise SdloraError(f"scheduler beta_schedule {kind!r} is not supported for training (use linear or scaled_linear)")


@dataclass
class NoiseSchedule:
    """alphas_cumprod (T,) in float32 on a device, and the formulas over it."""

    alphas_cumprod: torch.Tensor

    @classmethod
    def from_config(cls, config: dict, device: str | torch.device = "cpu") -> "NoiseSchedule":
        abar = torch.cumprod(1.0 - make_betas(dict(config)), dim=0)
        return cls(abar.to(device=device, dtype=torch.float32))

    @property
    def num_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    def _coefs(self, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t), sqrt(1 - abar_t) shaped (B, 1, 1, 1) to broadcast over latents."""
        abar = self.alphas_cumprod.to(t.device)[t].view(-1, *[1] * (ndim - 1))
        return abar.sqrt(), (1.0 - abar).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self._coefs(t, x0.dim())
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, prediction_type: str) -> torch.Tensor:
        if prediction_type == "epsilon":
            return noise
        if prediction_type == "v_prediction":
            a, s = self._coefs(t, x0.dim())
            return a * noise - s * x0
        raise SdloraError(f"train.prediction_type {prediction_type!r} is not one of {PREDICTION_TYPES}")

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod.to(t.device)[t]
        return abar / (1.0 - abar)

    def min_snr_weights(self, t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
        """Per-sample loss weights (B,) of Min-SNR-gamma (Hang et al. 2023).

        epsilon: min(SNR, gamma) / SNR;  v-prediction: min(SNR, gamma) / (SNR + 1).
        """
        snr = self.snr(t)
        clipped = torch.clamp(snr, max=gamma)
        return clipped / (snr + 1.0) if prediction_type == "v_prediction" else clipped / snr


def sample_timesteps(batch: int, generator: torch.Generator, t_min: int = 0, t_max: int = 1000,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """Uniform integer timesteps in [t_min, t_max), (B,) int64."""
    return torch.randint(t_min, t_max, (batch,), generator=generator, device=device)


def sample_noise(like: torch.Tensor, generator: torch.Generator, offset: float = 0.0) -> torch.Tensor:
    """Gaussian noise shaped like the latents (B, C, h, w), float32.

    A noise offset adds offset * N(0, 1) per (sample, channel), constant over space, so the model
    also learns to change the mean brightness (crosslabs.org "diffusion with offset noise").
    """
    noise = torch.randn(like.shape, generator=generator, device=like.device, dtype=torch.float32)
    if offset:
        b, c = like.shape[:2]
        noise = noise + offset * torch.randn((b, c, 1, 1), generator=generator, device=like.device)
    return noise
