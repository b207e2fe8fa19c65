"""The DDPM forward process used for training: timesteps, noise, noising, targets and SNR weights.

The schedule comes from the model's own scheduler config (SD 1.4: scaled_linear betas from 0.00085
to 0.012 over 1000 steps), so `alphas_cumprod` matches what the sampler assumes:

    x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps          (B, 4, h, w)
    epsilon target: eps;   v target: sqrt(abar_t) * eps - sqrt(1 - abar_t) * x_0
    SNR(t) = abar_t / (1 - abar_t)

Zero terminal SNR (Lin et al. 2024, diffusers' `rescale_betas_zero_snr`) shifts and scales
sqrt(abar) so its first value is kept and its last is 0: the last timestep is pure noise, as at
the start of sampling. Noise variants follow kohya: offset noise, pyramid (multi-resolution) noise,
and input perturbation (extra noise in the model's input only). Timesteps are drawn uniformly or
logit-normally (SD3), optionally shifted towards noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

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


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """abar (T,) -> abar with sqrt(abar) moved linearly so sqrt(abar_0) is kept and sqrt(abar_T) = 0."""
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    return ((root - last) * (first / (first - last))).pow(2)


@dataclass
class NoiseSchedule:
    """alphas_cumprod (T,) in float32 on a device, and the formulas over it."""

    alphas_cumprod: torch.Tensor

    @classmethod
    def from_config(cls, config: dict, device: str | torch.device = "cpu",
                    zero_terminal_snr: bool = False) -> "NoiseSchedule":
        abar = torch.cumprod(1.0 - make_betas(dict(config)), dim=0)
        if zero_terminal_snr:
            abar = rescale_zero_terminal_snr(abar)
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
                     device: str | torch.device = "cpu", sampling: str = "uniform", logit_mean: float = 0.0,
                     logit_std: float = 1.0, shift: float = 1.0) -> torch.Tensor:
    """Integer timesteps in [t_min, t_max), (B,) int64.

    uniform (no shift): exactly uniform integers. Otherwise a fraction u in [0, 1) is drawn (uniform, or
    sigmoid(N(logit_mean, logit_std)) for logit_normal), shifted to s*u / (1 + (s-1)*u), and scaled to the range.
    """
    if sampling == "uniform" and shift == 1.0:
        return torch.randint(t_min, t_max, (batch,), generator=generator, device=device)
    if sampling == "uniform":
        u = torch.rand(batch, generator=generator, device=device)
    elif sampling == "logit_normal":
        u = torch.sigmoid(logit_mean + logit_std * torch.randn(batch, generator=generator, device=device))
    else:
        raise SdloraError(f"train.timestep_sampling {sampling!r} is not one of uniform, logit_normal")
    u = shift * u / (1.0 + (shift - 1.0) * u)
    t = t_min + (u * (t_max - t_min)).long()
    return t.clamp(t_min, t_max - 1)


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


def pyramid_noise(noise: torch.Tensor, generator: torch.Generator, iterations: int,
                  discount: float) -> torch.Tensor:
    """Multi-resolution noise (kohya's `pyramid_noise_like`), (B, C, h, w) float32 of unit std.

    Level i adds discount^i * N(0, 1) drawn at the size (h, w) / r_i^i (r_i uniform in [2, 4), at least 1x1) and
    upsampled bilinearly; it stops after the first 1-pixel level. The sum is divided by its std over the batch.
    """
    b, c, h, w = noise.shape
    out = noise.clone()
    ratios = (2.0 + 2.0 * torch.rand(iterations, generator=generator, device=noise.device)).tolist()  # one sync
    for i, r in enumerate(ratios):
        hn, wn = max(1, int(h / r**i)), max(1, int(w / r**i))
        level = torch.randn((b, c, hn, wn), generator=generator, device=noise.device)
        out = out + F.interpolate(level, size=(h, w), mode="bilinear", align_corners=False) * discount**i
        if hn == 1 or wn == 1:
            break
    return out / out.std()


def perturb_input(noise: torch.Tensor, generator: torch.Generator, gamma: float) -> torch.Tensor:
    """Input perturbation (Ning et al. 2023, kohya's ip_noise_gamma): noise + gamma * N(0, 1), used to noise the
    model's input while the target keeps `noise`."""
    return noise + gamma * torch.randn(noise.shape, generator=generator, device=noise.device)
