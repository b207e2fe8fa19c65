"""The DDPM forward process against diffusers' DDPMScheduler (the reference for SD's training math)."""
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from sdlora.errors import SdloraError
from sdlora.models.skeleton import sd14_config
from sdlora.train.noise import (NoiseSchedule, make_betas, perturb_input, pyramid_noise, sample_noise,
                                sample_timesteps)


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


def test_zero_terminal_snr_matches_diffusers_and_the_formula(ref, sched):
    config = sd14_config("scheduler")
    ztsnr = NoiseSchedule.from_config(config, zero_terminal_snr=True).alphas_cumprod
    diffusers_ref = DDIMScheduler.from_config({**config, "rescale_betas_zero_snr": True}).alphas_cumprod
    torch.testing.assert_close(ztsnr, diffusers_ref.float(), rtol=1e-5, atol=1e-7)
    root = ref.alphas_cumprod.double().sqrt()  # the formula: sqrt(abar) moved linearly to end at 0
    expected = ((root - root[-1]) * root[0] / (root[0] - root[-1])) ** 2
    torch.testing.assert_close(ztsnr.double(), expected, rtol=1e-5, atol=1e-9)
    assert ztsnr[-1].item() == 0.0 and sched.alphas_cumprod[-1].item() > 0.004  # off: SD's terminal SNR ~0.0047
    assert ztsnr[0].item() == pytest.approx(sched.alphas_cumprod[0].item())
    schedule = NoiseSchedule(ztsnr)
    x0, noise, t = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 0.5), torch.tensor([999])
    assert schedule.add_noise(x0, noise, t).item() == 0.5  # pure noise at the last step
    assert schedule.target(x0, noise, t, "v_prediction").item() == -1.0  # v = -x0 there
    assert schedule.min_snr_weights(t, 5.0, "v_prediction").item() == 0.0  # kohya's min(SNR, g)/(SNR+1)


def _quantiles(t, qs):
    return [float(v) for v in torch.quantile(t.double(), torch.tensor(qs, dtype=torch.float64))]


def test_logit_normal_and_shifted_timesteps_follow_their_distributions():
    qs, n = [0.1, 0.5, 0.9], 1000
    normal = torch.distributions.Normal(0.0, 1.0)
    for mean, std, shift in [(0.0, 1.0, 1.0), (0.5, 0.7, 1.0), (0.0, 1.0, 3.0)]:
        t = sample_timesteps(20_000, torch.Generator().manual_seed(2), 0, n, sampling="logit_normal",
                             logit_mean=mean, logit_std=std, shift=shift)
        u = [torch.sigmoid(mean + std * normal.icdf(torch.tensor(q))).item() for q in qs]
        expected = [n * shift * v / (1 + (shift - 1) * v) for v in u]
        assert _quantiles(t, qs) == pytest.approx(expected, abs=15), (mean, std, shift)
    shifted = sample_timesteps(20_000, torch.Generator().manual_seed(3), 100, 300, shift=0.5)
    expected = [100 + 200 * 0.5 * q / (1 - 0.5 * q) for q in qs]  # below 1: towards clean timesteps
    assert _quantiles(shifted, qs) == pytest.approx(expected, abs=4)
    assert shifted.min() >= 100 and shifted.max() < 300
    with pytest.raises(SdloraError, match="train.timestep_sampling"):
        sample_timesteps(2, torch.Generator(), sampling="cosine")


def test_pyramid_noise_is_kohyas_formula_and_low_frequency():
    noise = torch.randn(8, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    got = pyramid_noise(noise, torch.Generator().manual_seed(1), iterations=6, discount=0.3)
    g = torch.Generator().manual_seed(1)  # the formula, step by step
    ratios = 2 + 2 * torch.rand(6, generator=g)
    expected = noise.clone()
    for i in range(6):
        side = max(1, int(32 / float(ratios[i]) ** i))
        level = torch.randn(8, 4, side, side, generator=g)
        expected += torch.nn.Upsample(size=(32, 32), mode="bilinear")(level) * 0.3**i
        if side == 1:
            break
    torch.testing.assert_close(got, expected / expected.std())
    assert got.std().item() == pytest.approx(1.0)

    def neighbour_corr(x):
        return torch.corrcoef(torch.stack([x[..., :-1].flatten(), x[..., 1:].flatten()]))[0, 1].item()

    strong = pyramid_noise(noise, torch.Generator().manual_seed(1), iterations=6, discount=0.8)
    assert neighbour_corr(noise) < 0.05 < 0.2 < neighbour_corr(strong)  # coarse levels correlate neighbours


def test_input_perturbation_adds_scaled_noise():
    noise = torch.zeros(4096)
    out = perturb_input(noise, torch.Generator().manual_seed(0), 0.1)
    torch.testing.assert_close(out, 0.1 * torch.randn(4096, generator=torch.Generator().manual_seed(0)))
