import pytest
import torch

from sdlora.train.loss import diffusion_loss, item_weights, per_sample_mse


def test_per_sample_mse_in_fp32():
    pred = torch.zeros(2, 4, 2, 2, dtype=torch.bfloat16)
    target = torch.stack([torch.ones(4, 2, 2), 2 * torch.ones(4, 2, 2)])
    mse = per_sample_mse(pred, target)
    assert mse.dtype == torch.float32 and mse.tolist() == [1.0, 4.0]


def test_prior_preservation_and_snr_weights():
    is_class = torch.tensor([False, True, True])
    w = item_weights(is_class, 3, prior_loss_weight=0.5, snr_weights=torch.tensor([1.0, 2.0, 0.5]))
    assert w.tolist() == [1.0, 1.0, 0.25]
    assert item_weights(None, 2, 0.5).tolist() == [1.0, 1.0]
    pred, target = torch.zeros(3, 1, 1, 1), torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1)
    # mean_i(w_i * mse_i) = (1*1 + 1*4 + 0.25*9) / 3
    assert diffusion_loss(pred, target, w).item() == pytest.approx((1 + 4 + 2.25) / 3)
