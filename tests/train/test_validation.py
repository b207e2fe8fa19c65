import contextlib

import numpy as np
import torch

from sdlora.config import RunConfig
from sdlora.lora import inject, lora_modules, set_multiplier
from sdlora.models import tiny_components
from sdlora.train.noise import NoiseSchedule
from sdlora.train.step import StepContext
from sdlora.train.validation import Validator, lora_multiplier, validation_loss


def test_grids_base_images_and_identity_check(tmp_path):
    c = tiny_components(0)
    inject(c.unet, "unet-attn", rank=2)
    cfg = RunConfig()
    cfg.validation.prompts, cfg.validation.num_inference_steps, cfg.data.resolution = ["a cat", "a dog"], 2, 32
    v = Validator(cfg, c, torch.device("cpu"), tmp_path)
    with lora_multiplier(c, 0.0):
        _, base = v.grid(0, base=True)
    assert (tmp_path / "samples" / "step-000000-base.png").is_file() and len(base) == 2
    assert all(w.adapters["default"].multiplier == 1.0 for w in lora_modules(c.unet).values())
    _, same = v.grid(1)
    assert v.identical_to_base(same)  # fresh LoRA (up = 0) changes nothing
    with torch.no_grad():
        for w in lora_modules(c.unet).values():
            w.adapters["default"].up.weight.normal_(0, 0.5)
    sheet, changed = v.grid(2)
    assert not v.identical_to_base(changed) and sheet.size[0] >= 2 * 32


def test_sampling_restores_training_mode(tmp_path):
    c = tiny_components(0)
    c.unet.train()
    c.vae.eval()
    cfg = RunConfig()
    cfg.validation.prompts, cfg.validation.num_inference_steps, cfg.data.resolution = ["x"], 1, 32
    Validator(cfg, c, torch.device("cpu"), tmp_path).images()
    assert c.unet.training and not c.vae.training


def test_zero_snr_runs_sample_with_ddim_and_their_schedule(tmp_path):
    c = tiny_components(0)
    cfg = RunConfig()
    cfg.validation.prompts, cfg.validation.num_inference_steps, cfg.data.resolution = ["x"], 1, 32
    cfg.train.prediction_type, cfg.train.zero_terminal_snr = "v_prediction", True
    v = Validator(cfg, c, torch.device("cpu"), tmp_path)
    assert np.isfinite(v.images()[0]).all()
    scheduler = v._sampler.pipeline.scheduler  # PLMS cannot sample zero terminal SNR
    assert type(scheduler).__name__ == "DDIMScheduler" and scheduler.config.rescale_betas_zero_snr
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.timestep_spacing == "trailing"


def test_validation_loss_is_fixed_across_calls():
    c = tiny_components(0)
    ctx = StepContext(unet=c.unet, schedule=NoiseSchedule.from_config(c.scheduler.config), cfg=RunConfig().train,
                      device=torch.device("cpu"), weight_dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    batches = [{"latents": torch.randn(2, 4, 8, 8, generator=g), "encoder_hidden_states": torch.randn(2, 77, 32, generator=g)}
               for _ in range(2)]
    a = validation_loss(ctx, batches, 1234, contextlib.nullcontext)
    b = validation_loss(ctx, batches, 1234, contextlib.nullcontext)
    assert a == b and np.isfinite(a) and validation_loss(ctx, batches, 99, contextlib.nullcontext) != a


def test_lora_multiplier_restores_the_previous_value_not_one():
    c = tiny_components(0)
    inject(c.unet, "unet-attn", rank=2)
    set_multiplier(c.unet, "default", 0.7)
    with lora_multiplier(c, 0.0):
        assert all(w.adapters["default"].multiplier == 0.0 for w in lora_modules(c.unet).values())
    assert all(w.adapters["default"].multiplier == 0.7 for w in lora_modules(c.unet).values())
