import pytest
import torch

from sdlora.tiny.arch import build_models
from sdlora.tiny.pool import render_pool
from sdlora.tiny.train_vae import (encode_pool, latent_scaling_factor, to_model_input, train_vae,
                                   vae_loss)
from sdlora.tiny.trainkit import StageOptions


@pytest.fixture(scope="module")
def images():
    return torch.from_numpy(render_pool(0, 16, workers=1).images)


def test_model_input_range_and_layout(images):
    x = to_model_input(images)
    assert x.shape == (16, 3, 64, 64) and x.min() >= -1.0 and x.max() <= 1.0
    assert torch.allclose(x[3, :, 5, 7], images[3, 5, 7].float() / 127.5 - 1.0)


def test_loss_has_its_parts_and_gradients(images):
    vae = build_models("micro")[1]
    loss, parts = vae_loss(vae, to_model_input(images[:4]))
    assert set(parts) == {"l1", "mse", "edge", "kl"} and torch.isfinite(loss)
    assert loss.item() > parts["l1"].item() > 0
    loss.backward()
    assert vae.decoder.conv_out.weight.grad.abs().sum() > 0


def test_train_vae_updates_weights_and_logs(images):
    vae = build_models("micro")[1]
    before = vae.decoder.conv_out.weight.detach().clone()
    lines = train_vae(vae, images, StageOptions(steps=2, batch_size=4, lr=1e-3, log_every=1))
    assert len(lines) == 2 and lines[-1].startswith("[vae] step 2 loss=")
    assert not torch.equal(before, vae.decoder.conv_out.weight) and not vae.training


def test_encode_pool_gives_posteriors_for_every_image(images):
    vae = build_models("micro")[1]
    mean, std = encode_pool(vae, images, batch_size=5)
    assert mean.shape == std.shape == (16, 4, 16, 16) and mean.dtype == torch.float16
    assert (std > 0).all()


def test_scaling_factor_is_one_over_sample_std():
    assert latent_scaling_factor(torch.zeros(100, 4), torch.ones(100, 4)) == pytest.approx(1.0)
    mean = torch.tensor([[-2.0], [2.0]]).expand(2, 1000).contiguous()
    assert latent_scaling_factor(mean, torch.zeros_like(mean)) == pytest.approx(1 / (8000 / 1999) ** 0.5)
