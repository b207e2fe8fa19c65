"""build_pipeline: generation with the tiny components, scheduler override, no safety checker."""
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from sdlora.models import build_pipeline, tiny_components


@pytest.fixture(scope="module")
def components():
    return tiny_components(seed=0)


def generate(pipe, seed=0):
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipe("a photo of a red circle", num_inference_steps=2, height=16, width=16, output_type="np", generator=generator)


def test_two_step_generation(components):
    pipe = build_pipeline(components)
    assert pipe.safety_checker is None and pipe.unet is components.unet and pipe.scheduler is components.scheduler
    out = generate(pipe)
    assert out.images.shape == (1, 16, 16, 3) and np.isfinite(out.images).all()
    assert out.nsfw_content_detected is None
    assert np.array_equal(generate(pipe).images, out.images)  # seeded: reproducible


def test_scheduler_override_changes_sampling(components):
    ddim = DDIMScheduler.from_config(components.scheduler.config)
    pipe = build_pipeline(components, scheduler=ddim)
    assert pipe.scheduler is ddim and components.scheduler is not ddim
    latents = []
    for p in (build_pipeline(components), pipe):
        p.set_progress_bar_config(disable=True)
        out = p("a red circle", num_inference_steps=2, height=16, width=16, output_type="latent",
                generator=torch.Generator().manual_seed(1))
        latents.append(out.images)
    assert latents[0].shape == latents[1].shape == (1, 4, 8, 8)
    assert not torch.equal(latents[0], latents[1])
