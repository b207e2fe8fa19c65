import pytest
import torch

from sdlora.tiny.arch import build_models
from sdlora.tiny.train_unet import CAPTION_DROPOUT, LatentData, sample_batch, sd14_schedule, step_loss, train_unet
from sdlora.tiny.trainkit import StageOptions


def latent_data(n: int = 32, captions: int = 9) -> LatentData:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49406, (captions, 77), generator=g)
    index = torch.randint(1, captions, (n, 4), generator=g)
    mean = torch.randn(n, 4, 16, 16, generator=g).half()
    return LatentData(mean, torch.full_like(mean, 0.1), ids, index, scaling_factor=0.5)


def test_noise_schedule_is_sd14_scaled_linear():
    ac = sd14_schedule().alphas_cumprod
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    assert ac.shape == (1000,)
    assert torch.allclose(ac.double(), torch.cumprod(1 - betas, 0), rtol=1e-5)


def test_sample_batch_scales_latents_and_drops_captions():
    data = latent_data()
    latents, ids = sample_batch(data, 4000, torch.Generator().manual_seed(1))
    assert latents.shape == (4000, 4, 16, 16) and ids.shape == (4000, 77)
    empty = (ids == data.ids[0]).all(dim=1).float().mean().item()
    assert empty == pytest.approx(CAPTION_DROPOUT, abs=0.02)
    assert latents.std().item() == pytest.approx(0.5 * (1 + 0.01) ** 0.5, rel=0.05)


def test_step_loss_is_finite_and_differentiable():
    unet, _, text_encoder = build_models("micro")
    data = latent_data()
    latents, ids = sample_batch(data, 4, torch.Generator().manual_seed(0))
    loss = step_loss(unet, text_encoder, latents, ids, sd14_schedule(), torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert text_encoder.get_input_embeddings().weight.grad.abs().sum() > 0
    assert unet.conv_out.weight.grad.abs().sum() > 0


def test_train_unet_trains_both_and_ends_in_eval_with_ema_weights():
    unet, _, text_encoder = build_models("micro")
    before = unet.conv_out.weight.detach().clone()
    lines = train_unet(unet, text_encoder, latent_data(), StageOptions(steps=3, batch_size=4, lr=1e-3, log_every=1))
    assert [line.split()[2] for line in lines] == ["1", "2", "3"]
    assert not torch.equal(before, unet.conv_out.weight)
    assert not unet.training and not text_encoder.training
