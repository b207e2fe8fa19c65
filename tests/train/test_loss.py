"""The loss against its formulas: reference values are computed here in float64 Python, element by element."""
import math

import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.models.skeleton import sd14_config
from sdlora.train.loss import (debiased_weights, diffusion_loss, elementwise_loss, huber_threshold, item_weights,
                               per_sample_mse, reduce_per_sample)
from sdlora.train.noise import NoiseSchedule

RESIDUALS = [-3.0, -0.4, -0.05, 0.0, 0.02, 0.3, 1.5]


def _reference(kind: str, r: float, c: float) -> float:
    root = math.sqrt(r * r + c * c) - c
    return {"l2": r * r, "l1": abs(r), "huber": 2 * c * root, "smooth_l1": 2 * root}[kind]


def test_per_sample_mse_in_fp32():
    pred = torch.zeros(2, 4, 2, 2, dtype=torch.bfloat16)
    target = torch.stack([torch.ones(4, 2, 2), 2 * torch.ones(4, 2, 2)])
    mse = per_sample_mse(pred, target)
    assert mse.dtype == torch.float32 and mse.tolist() == [1.0, 4.0]


@pytest.mark.parametrize("kind", ["l2", "l1", "huber", "smooth_l1"])
def test_elementwise_loss_matches_formula(kind):
    c = [0.1, 0.5]  # one threshold per sample
    target = torch.tensor(RESIDUALS).view(1, 1, 1, -1).repeat(2, 1, 1, 1)
    out = elementwise_loss(torch.zeros_like(target), -target, kind, torch.tensor(c))
    expected = [[_reference(kind, r, ci) for r in RESIDUALS] for ci in c]
    torch.testing.assert_close(out.view(2, -1).double(), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-5, atol=1e-7)


def test_huber_is_l2_near_zero_and_linear_far_away():
    c = torch.tensor([0.1])
    small, large = torch.full((1, 1, 1, 1), 1e-2), torch.full((1, 1, 1, 1), 100.0)
    assert elementwise_loss(small, 0 * small, "huber", c).item() == pytest.approx(1e-4, rel=1e-2)
    assert elementwise_loss(large, 0 * large, "huber", c).item() == pytest.approx(2 * 0.1 * (100 - 0.1), rel=1e-4)


def test_huber_thresholds_per_schedule():
    sched = NoiseSchedule.from_config(sd14_config("scheduler"))
    t = torch.tensor([0, 250, 500, 999])
    c, n = 0.2, sched.num_timesteps
    abar = [float(a) for a in sched.alphas_cumprod.double()[t]]
    expected = {
        "constant": [c] * 4,
        "exponential": [math.exp(math.log(c) * int(ti) / n) for ti in t],  # 1 at t=0 down to c at t=T
        "snr": [(1 - c) / (1 + math.sqrt((1 - a) / a)) ** 2 + c for a in abar],
    }
    for schedule, values in expected.items():
        got = huber_threshold(schedule, c, t, sched.snr(t), n)
        assert got.tolist() == pytest.approx(values, rel=1e-5), schedule
    snr = huber_threshold("snr", c, t, sched.snr(t), n)
    assert snr[0] > 0.9 and snr[-1] < 1.05 * c  # clean: ~L2 (c near 1); noisy: robust (c)
    with pytest.raises(SdloraError, match="train.huber_schedule"):
        huber_threshold("linear", c, t, sched.snr(t), n)


def test_debiased_weights():
    snr = torch.tensor([1e9, 4.0, 0.25, 0.0])
    eps = debiased_weights(snr, "epsilon")
    assert eps[:3].tolist() == pytest.approx([1 / math.sqrt(1000), 0.5, 2.0])  # SNR capped at 1000
    assert debiased_weights(snr, "v_prediction").tolist() == pytest.approx([1 / 1001, 1 / 5, 1 / 1.25, 1.0])


def test_mask_weights_pixels_and_black_mask_gives_zero_loss_and_gradient():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 4, 2, 3, generator=g, requires_grad=True)
    target = torch.randn(3, 4, 2, 3, generator=g)
    mask = torch.rand(3, 1, 2, 3, generator=g)
    mask[1] = 0.0  # black: sample 1 is left out
    mask[2] = 1.0  # white: the plain mean
    loss = reduce_per_sample(elementwise_loss(pred, target), mask)
    e = (pred - target).detach().double() ** 2
    m = mask.double()
    assert loss[0].item() == pytest.approx(float((m[0] * e[0]).sum() / (4 * m[0].sum())), rel=1e-6)
    assert loss[1].item() == 0.0
    assert loss[2].item() == pytest.approx(float(e[2].mean()), rel=1e-6)
    loss.sum().backward()
    assert torch.count_nonzero(pred.grad[1]) == 0 and torch.isfinite(pred.grad).all()
    assert torch.count_nonzero(pred.grad[0]) > 0
    with pytest.raises(SdloraError, match="loss mask"):
        reduce_per_sample(elementwise_loss(pred, target), torch.ones(3, 1, 4, 6))


def test_prior_preservation_and_snr_weights():
    is_class = torch.tensor([False, True, True])
    w = item_weights(is_class, 3, prior_loss_weight=0.5, snr_weights=torch.tensor([1.0, 2.0, 0.5]))
    assert w.tolist() == [1.0, 1.0, 0.25]
    assert item_weights(None, 2, 0.5).tolist() == [1.0, 1.0]
    pred, target = torch.zeros(3, 1, 1, 1), torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1)
    # mean_i(w_i * mse_i) = (1*1 + 1*4 + 0.25*9) / 3
    assert diffusion_loss(pred, target, w).item() == pytest.approx((1 + 4 + 2.25) / 3)
    assert diffusion_loss(pred, target, w, "l1").item() == pytest.approx((1 + 2 + 0.25 * 3) / 3)
    with pytest.raises(SdloraError, match="train.loss_type"):
        diffusion_loss(pred, target, w, "l3")
    with pytest.raises(SdloraError, match="huber_c"):
        diffusion_loss(pred, target, w, "huber")
