import pytest
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, PNDMScheduler)

from sdlora.errors import SdloraError
from sdlora.generate.prediction import NoiseSettings
from sdlora.generate.schedulers import SCHEDULERS, make_scheduler, sampler_label
from sdlora.models.skeleton import sd14_scheduler
from sdlora.train.noise import NoiseSchedule

EXPECTED = {
    "pndm": (PNDMScheduler, "PLMS"),
    "ddim": (DDIMScheduler, "DDIM"),
    "euler": (EulerDiscreteScheduler, "Euler"),
    "euler_a": (EulerAncestralDiscreteScheduler, "Euler a"),
    "dpmpp_2m": (DPMSolverMultistepScheduler, "DPM++ 2M"),
    "dpmpp_2m_karras": (DPMSolverMultistepScheduler, "DPM++ 2M Karras"),
}


def test_table_lists_the_expected_schedulers():
    assert set(SCHEDULERS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_scheduler_keeps_sd14_noise_schedule_and_applies_overrides(name):
    base = sd14_scheduler().config
    scheduler = make_scheduler(name, base)
    cls, label = EXPECTED[name]
    assert type(scheduler) is cls and sampler_label(name) == label
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type"):
        assert scheduler.config[key] == base[key], key
    for key, value in SCHEDULERS[name].overrides.items():
        assert scheduler.config[key] == value, key
    scheduler.set_timesteps(4)
    assert len(scheduler.timesteps) >= 4 and int(scheduler.timesteps.max()) < 1000


def test_karras_and_plain_dpm_differ_only_in_sigmas():
    base = sd14_scheduler().config
    plain, karras = make_scheduler("dpmpp_2m", base), make_scheduler("dpmpp_2m_karras", base)
    plain.set_timesteps(10)
    karras.set_timesteps(10)
    assert not plain.timesteps.equal(karras.timesteps)


def test_unknown_scheduler_lists_choices():
    with pytest.raises(SdloraError, match="choose one of pndm, ddim"):
        make_scheduler("lms", sd14_scheduler().config)


ZERO_SNR = NoiseSettings("v_prediction", True)
MU, SIGMA = 3.0, 0.5  # 1-D Gaussian "images": a very bright mean, which SD's schedule cannot reach


def _sample_mean(name: str, noise: NoiseSettings, steps: int = 20) -> tuple[float, int]:
    """Sample with the exact v-predictor of N(MU, SIGMA^2) data under the zero-terminal-SNR training schedule
    (the model a perfect training run makes), the pipeline's way; (mean of 4096 samples, first timestep)."""
    base = sd14_scheduler().config
    abar = NoiseSchedule.from_config(base, zero_terminal_snr=True).alphas_cumprod.double()
    scheduler = make_scheduler(name, base, noise)
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4096, 1, 1, 1, generator=g, dtype=torch.float64) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_t, a = scheduler.scale_model_input(x, t), abar[int(t)]
        x0 = MU + a.sqrt() * SIGMA**2 / (a * SIGMA**2 + 1 - a) * (x_t - a.sqrt() * MU)  # E[x0 | x_t]
        v = (a.sqrt() * x_t - x0) / (1 - a).sqrt()  # E[v | x_t], v = sqrt(a) eps - sqrt(1 - a) x0
        x = scheduler.step(v, t, x, generator=g).prev_sample
    return x.mean().item(), int(scheduler.timesteps[0])


@pytest.mark.parametrize("name", [n for n, c in SCHEDULERS.items() if c.zero_snr])
def test_zero_snr_v_model_samples_its_data(name):
    mean, first = _sample_mean(name, ZERO_SNR)
    assert first == 999 and mean == pytest.approx(MU, abs=0.02)


def test_zero_snr_needs_the_rescaled_schedule_and_trailing_steps():
    scheduler = make_scheduler("ddim", sd14_scheduler().config, ZERO_SNR)
    trained = NoiseSchedule.from_config(sd14_scheduler().config, zero_terminal_snr=True).alphas_cumprod
    torch.testing.assert_close(scheduler.alphas_cumprod, trained, rtol=1e-5, atol=1e-7)
    leading, first = _sample_mean("ddim", NoiseSettings("v_prediction", True, "leading"))
    assert first < 999 and abs(leading - MU) > 0.02  # starts at a step that was never pure noise
    plain, _ = _sample_mean("ddim", NoiseSettings("v_prediction", False))
    assert abs(plain - MU) > 0.05  # SD's schedule pulls the mean towards grey: the bias zero terminal SNR removes
    with pytest.raises(SdloraError, match="'pndm' cannot sample"):
        make_scheduler("pndm", sd14_scheduler().config, ZERO_SNR)
