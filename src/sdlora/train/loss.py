"""The training loss: per-sample MSE, optional Min-SNR weights, DreamBooth prior preservation.

    loss = mean_i( w_i * mse_i ),   mse_i = mean over (C, h, w) of (pred_i - target_i)^2
    w_i  = snr_weight_i * (prior_loss_weight if item i is a class image else 1)

This is kohya's formulation of prior preservation (a per-item weight), which also works for
batches that hold any mix of instance and class images.
"""
from __future__ import annotations

import torch


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) x2 -> (B,), in float32 whatever the model's precision."""
    return (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)


def item_weights(is_class: torch.Tensor | None, batch: int, prior_loss_weight: float,
                 snr_weights: torch.Tensor | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """w_i (B,) float32 from the class flags (B,) bool and optional Min-SNR weights (B,)."""
    weights = torch.ones(batch, device=device)
    if is_class is not None:
        weights = torch.where(is_class.to(device).bool(), torch.full_like(weights, prior_loss_weight), weights)
    if snr_weights is not None:
        weights = weights * snr_weights.to(device=device, dtype=torch.float32)
    return weights


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The scalar loss mean_i(w_i * mse_i)."""
    return (per_sample_mse(pred, target) * weights).mean()
