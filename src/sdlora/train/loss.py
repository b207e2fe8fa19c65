"""The training loss: a per-element loss, an optional per-pixel mask, per-item weights.

    loss   = mean_i( w_i * l_i )
    l_i    = sum(m_i * e_i) / sum(m_i broadcast over C)      (no mask: the mean of e_i over (C, h, w))
    e      = (pred - target)^2                                 l2
             |pred - target|                                   l1
             2c * (sqrt((pred - target)^2 + c^2) - c)          huber (pseudo-Huber, kohya's scale: ~L2 near 0)
             2  * (sqrt((pred - target)^2 + c^2) - c)          smooth_l1
    w_i    = prior_loss_weight (class images) * Min-SNR weight * debiased-estimation weight

Huber's threshold c may change with the timestep (kohya's `huber_schedule`): `constant` c, `exponential`
c^(t/T) (1 at t=0, c at t=T), `snr` (1 - c) / (1 + sigma_t)^2 + c with sigma_t = sqrt((1 - abar_t) / abar_t).
Debiased estimation (Yu et al. 2024, as kohya implements it) weighs 1/sqrt(SNR) for epsilon and
1/(SNR + 1) for v-prediction, with SNR capped at 1000 so t=0 stays finite.
Prior preservation is kohya's formulation (a per-item weight), which works for any mix of instance
and class images in a batch.
"""
from __future__ import annotations

import torch

from sdlora.errors import SdloraError

LOSS_TYPES = ("l2", "l1", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")
DEBIAS_SNR_CAP = 1000.0


def elementwise_loss(pred: torch.Tensor, target: torch.Tensor, loss_type: str = "l2",
                     huber_c: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, h, w) x2 -> (B, C, h, w) float32 whatever the model's precision; huber_c (B,) for the Huber types."""
    diff = pred.float() - target.float()
    if loss_type == "l2":
        return diff.pow(2)
    if loss_type == "l1":
        return diff.abs()
    if loss_type in ("huber", "smooth_l1"):
        if huber_c is None:
            raise SdloraError(f"train.loss_type {loss_type!r} needs a threshold (train.huber_c)")
        c = huber_c.to(diff.device, torch.float32).view(-1, *[1] * (diff.dim() - 1))
        smooth = 2.0 * ((diff.pow(2) + c.pow(2)).sqrt() - c)
        return c * smooth if loss_type == "huber" else smooth
    raise SdloraError(f"train.loss_type {loss_type!r} is not one of {', '.join(LOSS_TYPES)}")


def huber_threshold(schedule: str, c: float, t: torch.Tensor, snr: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """The threshold c_i (B,) float32 for timesteps t (B,) with their SNR (B,)."""
    if schedule == "constant":
        return torch.full(t.shape, float(c), device=t.device)
    if schedule == "exponential":
        return float(c) ** (t.float() / num_timesteps)
    if schedule == "snr":
        sigma = snr.float().rsqrt()  # sqrt((1 - abar) / abar); inf at zero terminal SNR, giving c
        return (1.0 - c) / (1.0 + sigma).pow(2) + c
    raise SdloraError(f"train.huber_schedule {schedule!r} is not one of {', '.join(HUBER_SCHEDULES)}")


def debiased_weights(snr: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Debiased-estimation weights (B,): 1/sqrt(SNR) (epsilon) or 1/(SNR + 1) (v-prediction), SNR <= 1000."""
    snr = snr.float().clamp(max=DEBIAS_SNR_CAP)
    return 1.0 / (snr + 1.0) if prediction_type == "v_prediction" else snr.rsqrt()


def reduce_per_sample(elementwise: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, h, w) -> (B,): the mean, or with a mask (B, 1, h, w) in [0, 1] the mask-weighted mean.

    An all-zero mask gives exactly 0 and zero gradient for its sample (the denominator becomes 1, not 0)."""
    if mask is None:
        return elementwise.flatten(1).mean(dim=1)
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != elementwise.shape[0] \
            or mask.shape[2:] != elementwise.shape[2:]:
        raise SdloraError(f"loss mask of shape {tuple(mask.shape)} does not match the latents "
                          f"{tuple(elementwise.shape)}: it must be (B, 1, h, w) at latent resolution")
    mask = mask.to(elementwise.device, torch.float32)
    total = (mask * elementwise).flatten(1).sum(dim=1)
    area = mask.flatten(1).sum(dim=1) * elementwise.shape[1]  # the mask broadcast over the C channels
    return total / torch.where(area > 0, area, torch.ones_like(area))


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) x2 -> (B,), in float32 whatever the model's precision."""
    return reduce_per_sample(elementwise_loss(pred, target, "l2"))


def item_weights(is_class: torch.Tensor | None, batch: int, prior_loss_weight: float,
                 snr_weights: torch.Tensor | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """w_i (B,) float32 from the class flags (B,) bool and optional timestep weights (B,) (Min-SNR, debiased)."""
    weights = torch.ones(batch, device=device)
    if is_class is not None:
        weights = torch.where(is_class.to(device).bool(), torch.full_like(weights, prior_loss_weight), weights)
    if snr_weights is not None:
        weights = weights * snr_weights.to(device=device, dtype=torch.float32)
    return weights


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, loss_type: str = "l2",
                   huber_c: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The scalar loss mean_i(w_i * l_i)."""
    per_sample = reduce_per_sample(elementwise_loss(pred, target, loss_type, huber_c), mask)
    return (per_sample * weights.to(per_sample.device)).mean()
