import pytest
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, PNDMScheduler)

from sdlora.errors import SdloraError
from sdlora.generate.schedulers import SCHEDULERS, make_scheduler, sampler_label
from sdlora.models.skeleton import sd14_scheduler

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
