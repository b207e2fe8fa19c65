"""The DDPM forward process against diffusers' DDPMScheduler (the reference for SD's training math)."""
import pytest
import torch
from diffusers import DDPMScheduler

from sdlora.errors import SdloraError
from sdlora.models.skeleton import sd14_config
from sdlora.train.noise import NoiseSchedule, make_betas, sample_noise, sample_timesteps


@pytest.fixture(scope="module")
def ref():
    return DDPMScheduler.from_config(sd14_config("scheduler"))


@pytest.fixture(scope="module")
def sched():
    return NoiseSchedule.from_config(sd14_config("scheduler"))


def test_alphas_cumprod_match_diffusers(ref, sched):
    assert sched.num_timesteps == 1000
    torch.testing.assert_close(sched.alphas_cumprod, ref.alphas_cumprod.float(), rtol=1e-6, atol=1e-7)
    betas = make_betas(sd14_config("scheduler"))
    assert betas[0].item() == pytest.approx(0.00085) and betas[-1].item() == pytest.approx(0.012)


def test_linear_and_trained_betas():
    assert make_betas({"beta_schedule": "linear", "beta_start": 0.1, "beta_end": 0.2, "num_train_timesteps": 3}).tolist() \
        == pytest.approx([0.1, 0.15, 0.2])
    assert make_betas({"trained_betas": [0.5, 0.25]}).tolist() == [0.5, 0.25]
    with pytest.raises(SdloraError, match="squaredcos"):
        make_betas({"beta_schedule": "squaredcos_cap_v2"})


def test_add_noise_and_v_target_match_diffusers(ref, sched):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    torch.testing.assert_close(sched.add_noise(x0, noise, t), ref.add_noise(x0, noise, t))
    torch.testing.assert_close(sched.target(x0, noise, t, "v_prediction"), ref.get_velocity(x0, noise, t))
    assert sched.target(x0, noise, t, "epsilon") is noise
    with pytest.raises(SdloraError, match="prediction_type"):
        sched.target(x0, noise, t, "sample")


def test_min_snr_weights(sched):
    t = torch.tensor([0, 100, 999])
    snr = sched.alphas_cumprod[t] / (1 - sched.alphas_cumprod[t])
    gamma = 5.0
    eps = sched.min_snr_weights(t, gamma, "epsilon")
    torch.testing.assert_close(eps, torch.minimum(snr, torch.tensor(gamma)) / snr)
    assert eps[0] < 1 and eps[-1] == 1.0  # low t (high SNR) is down-weighted, high t is not
    v = sched.min_snr_weights(t, gamma, "v_prediction")
    torch.testing.assert_close(v, torch.minimum(snr, torch.tensor(gamma)) / (snr + 1))


def test_timesteps_uniform_in_range_and_seeded():
    t = sample_timesteps(10_000, torch.Generator().manual_seed(1), 100, 200)
    assert t.min() >= 100 and t.max() < 200 and len(t.unique()) == 100
    assert torch.equal(t, sample_timesteps(10_000, torch.Generator().manual_seed(1), 100, 200))


def test_noise_offset_shifts_channel_means():
    like = torch.zeros(64, 4, 16, 16)
    plain = sample_noise(like, torch.Generator().manual_seed(0))
    offset = sample_noise(like, torch.Generator().manual_seed(0), offset=0.5)
    # per (sample, channel) means: ~N(0, 1/256) without offset, variance +0.25 with it
    assert plain.mean(dim=(2, 3)).std() < 0.1 < offset.mean(dim=(2, 3)).std()
    shift = offset - offset.mean(dim=(2, 3), keepdim=True)
    assert shift.std().item() == pytest.approx(plain.std().item(), rel=0.05)
