"""LoRAAdapter on its own: scale, init, rank dropout, option checking."""
import pytest
import torch
from torch import nn

from sdlora.errors import SdloraError
from sdlora.lora.adapter import LoRAAdapter, check_options


def linear_adapter(rank=4, features=64, **opts):
    return LoRAAdapter(nn.Linear(features, rank, bias=False), nn.Linear(rank, features, bias=False), rank, **opts)


def conv_adapter(rank=4, channels=4, **opts):
    return LoRAAdapter(nn.Conv2d(channels, rank, 3, padding=1, bias=False), nn.Conv2d(rank, channels, 1, bias=False),
                       rank, **opts)


@pytest.mark.parametrize("rank,alpha,rslora,scale", [
    (4, None, False, 1.0),  # alpha defaults to rank
    (4, 2, False, 0.5),
    (16, 8, True, 2.0),  # alpha / sqrt(rank)
    (16, None, True, 4.0),
])
def test_scale(rank, alpha, rslora, scale):
    assert linear_adapter(rank, alpha=alpha, rslora=rslora).scale == scale


def test_kaiming_and_gaussian_init_with_zero_up():
    torch.manual_seed(0)
    kaiming, gaussian = linear_adapter(8), linear_adapter(8, init="gaussian")
    assert torch.count_nonzero(kaiming.up.weight) == torch.count_nonzero(gaussian.up.weight) == 0
    assert kaiming.down.weight.abs().max() <= 1 / 64 ** 0.5  # kaiming-uniform(a=sqrt(5)): bound 1/sqrt(fan_in)
    assert kaiming.down.weight.abs().max() > 0.8 / 64 ** 0.5
    assert abs(gaussian.down.weight.std().item() - 1 / 8) < 0.02  # PEFT's gaussian: std 1/rank


def test_lora_weight_flattens_the_conv_kernel():
    ad = conv_adapter(rank=2, channels=5)
    ad.up.weight.data.normal_()
    assert ad.lora_weight().shape == (5, 5 * 3 * 3)
    assert torch.allclose(ad.lora_weight(), ad.up.weight.view(5, 2) @ ad.down.weight.view(2, -1))


def identity(ad):
    with torch.no_grad():
        ad.down.weight.copy_(torch.eye(ad.rank).view_as(ad.down.weight))
        ad.up.weight.copy_(torch.eye(ad.rank).view_as(ad.up.weight))
    return ad.train()


def test_rank_dropout_masks_ranks_per_sample_and_rescales():
    torch.manual_seed(0)
    x = torch.randn(16, 6, 4) + 3.0  # (B, T, rank): no zeros
    y = identity(linear_adapter(4, features=4, rank_dropout=0.5))(x)
    kept = y != 0
    assert torch.allclose(y[kept], 2 * x[kept])  # rescaled by 1 / (1 - p)
    assert torch.equal(kept, kept[:, :1, :].expand_as(kept))  # one mask for all tokens of a sample
    per_sample = {tuple(mask[0].tolist()) for mask in kept}
    assert len(per_sample) > 1 and 0 < kept.float().mean() < 1


def test_rank_dropout_on_conv_masks_whole_channels():
    torch.manual_seed(0)
    ad = LoRAAdapter(nn.Conv2d(4, 4, 1, bias=False), nn.Conv2d(4, 4, 1, bias=False), 4, rank_dropout=0.5)
    kept = identity(ad)(torch.randn(8, 4, 3, 3) + 3.0) != 0  # (B, rank, H, W)
    assert torch.equal(kept, kept[:, :, :1, :1].expand_as(kept)) and 0 < kept.float().mean() < 1


def test_rank_dropout_is_off_in_eval():
    ad = identity(linear_adapter(4, features=4, rank_dropout=0.9)).eval()
    x = torch.randn(3, 4)
    assert torch.equal(ad(x), x)


@pytest.mark.parametrize("rank,alpha,opts,message", [
    (0, None, {}, "rank must be a positive integer, got 0"),
    (-2, None, {}, "rank must be a positive integer"),
    (2.5, None, {}, "rank must be a positive integer"),
    (True, None, {}, "rank must be a positive integer"),
    (4, 0, {}, "alpha must be a positive number"),
    (4, float("nan"), {}, "alpha must be a positive number"),
    (4, None, {"dropout": 1.0}, "dropout must be a probability in \\[0, 1\\)"),
    (4, None, {"rank_dropout": -0.1}, "rank_dropout must be a probability"),
    (4, None, {"module_dropout": "0.1"}, "module_dropout must be a probability"),
    (4, None, {"init": "xavier"}, "init must be one of"),
    (4, None, {"use_rslora": True}, "unknown LoRA option 'use_rslora'"),
])
def test_check_options(rank, alpha, opts, message):
    with pytest.raises(SdloraError, match=message):
        check_options(rank, alpha, **opts)
