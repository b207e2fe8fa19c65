"""The bundled sd-tiny, loaded the way users load it (`--model tiny`), draws what it is asked for."""
import json

import pytest
import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

from sdlora.models import SDComponents, load_components
from sdlora.tiny import SD_TINY_DIR
from sdlora.tiny.demo import SAMPLE_STEPS, SD_TINY_GUIDANCE
from sdlora.tiny.quality import evaluate_quality


@pytest.fixture(scope="module")
def sd_tiny() -> SDComponents:
    return load_components("tiny")


def test_bundled_model_loads_through_the_loader(sd_tiny):
    recorded = json.loads((SD_TINY_DIR / "pretrain.json").read_text())
    assert isinstance(sd_tiny.unet, UNet2DConditionModel) and isinstance(sd_tiny.vae, AutoencoderKL)
    assert isinstance(sd_tiny.text_encoder, CLIPTextModel) and isinstance(sd_tiny.scheduler, PNDMScheduler)
    for name in ("unet", "vae", "text_encoder"):
        module = getattr(sd_tiny, name)
        assert sum(p.numel() for p in module.parameters()) == recorded["params"][name], name
        assert next(module.parameters()).dtype == torch.float32  # stored fp16, loaded fp32 by default
    assert sd_tiny.vae.config.scaling_factor == pytest.approx(recorded["scaling_factor"])
    assert sd_tiny.unet.config.cross_attention_dim == sd_tiny.text_encoder.config.hidden_size
    # SD 1.4's scheduler, and the bundled CLIP tokenizer
    config = sd_tiny.scheduler.config
    assert (config.beta_schedule, config.beta_start, config.beta_end, config.num_train_timesteps) == \
        ("scaled_linear", 0.00085, 0.012, 1000)
    assert sd_tiny.tokenizer.model_max_length == 77 and len(sd_tiny.tokenizer) == 49408
    # 64x64 images <-> 16x16x4 latents
    with torch.no_grad():
        latents = sd_tiny.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert latents.shape == (1, 4, 16, 16)


@pytest.mark.slow
def test_every_colour_and_shape_prompt_is_drawn_right(sd_tiny):
    """Every colour x shape prompt ("a red star"), one seed, sd-tiny's guidance 2.0, PNDM 20 steps."""
    report = evaluate_quality(sd_tiny, seeds=[0], guidance=SD_TINY_GUIDANCE, steps=SAMPLE_STEPS, batch_size=40)
    assert report["n"] == 40
    assert report["colour"] >= 0.80, report
    assert report["shape"] >= 0.60, report
    assert report["style"] >= 0.80, report  # plain: the base model draws no stripes unasked
