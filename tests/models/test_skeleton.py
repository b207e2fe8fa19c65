"""Full-size SD 1.4 skeleton (counts on the meta device) and the tiny stand-ins."""
import pytest
import torch
from diffusers import PNDMScheduler

from sdlora.models import SDComponents, tiny_components
from sdlora.models import skeleton


def n_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "build, expected",
    [(skeleton.sd14_unet, 859_520_964), (skeleton.sd14_vae, 83_653_863), (skeleton.sd14_text_encoder, 123_060_480)],
)
def test_full_size_parameter_counts(build, expected):
    with torch.device("meta"):
        model = build()
    assert n_params(model) == expected


def test_sd14_scheduler_matches_sd14():
    sched = skeleton.sd14_scheduler()
    assert isinstance(sched, PNDMScheduler)
    cfg = sched.config
    assert (cfg.beta_start, cfg.beta_end, cfg.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert (cfg.num_train_timesteps, cfg.steps_offset, cfg.skip_prk_steps) == (1000, 1, True)
    assert cfg.prediction_type == "epsilon"


def test_tiny_components_fit_together():
    comps = tiny_components(seed=0)
    assert isinstance(comps, SDComponents) and isinstance(comps.scheduler, PNDMScheduler)
    ids = comps.tokenizer("a red circle", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = comps.text_encoder(ids)[0]  # (1, 77, 32)
        latents = comps.vae.encode(torch.zeros(1, 3, 16, 16)).latent_dist.mean  # (1, 4, 8, 8)
        noise = comps.unet(latents, 10, encoder_hidden_states=hidden).sample
    assert hidden.shape == (1, 77, 32) and latents.shape == (1, 4, 8, 8) and noise.shape == latents.shape


def test_tiny_components_are_seeded():
    a, b, c = tiny_components(0), tiny_components(0), tiny_components(1)
    for name in ("unet", "vae", "text_encoder"):
        sa, sb, sc = (getattr(x, name).state_dict() for x in (a, b, c))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert any(not torch.equal(sa[k], sc[k]) for k in sa)
