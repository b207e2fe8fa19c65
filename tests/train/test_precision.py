"""The precision rule (`auto` never picks a mode slower than fp32) and sampling in a run's precision."""
from __future__ import annotations

import pytest
import torch

from sdlora.config import RunConfig
from sdlora.errors import SdloraError
from sdlora.lora import inject, mark_only_lora_trainable
from sdlora.models import tiny_components
from sdlora.train.precision import Choice, autocast, choose, sampling_autocast, weight_dtype
from sdlora.train.validation import Validator


@pytest.mark.parametrize("setting, device, cuda_bf16, mode", [
    ("auto", "cpu", None, "no"),  # bf16 autocast measured slower than fp32 on CPUs (issue 19)
    ("auto", "cuda", True, "bf16"),
    ("auto", "cuda", False, "fp16"),
    ("no", "cpu", None, "no"), ("bf16", "cpu", None, "bf16"), ("fp16", "cuda", None, "fp16"),
    ("no", "cuda", None, "no"),
])
def test_choose(setting, device, cuda_bf16, mode):
    choice = choose(setting, device, cuda_bf16=cuda_bf16)
    assert choice.mode == mode and choice.reason
    assert choice.reason.startswith("auto") == (setting == "auto")


def test_auto_on_the_cpu_says_why_in_words():
    choice = choose("auto", "cpu")
    assert choice == Choice("no", choice.reason) and choice.name == "fp32"
    assert "fp32 on the CPU" in choice.reason and "bf16" in choice.reason


def test_fp16_on_the_cpu_is_refused_in_one_line():
    with pytest.raises(SdloraError, match="train.mixed_precision") as info:
        choose("fp16", "cpu")
    assert "\n" not in str(info.value)


def test_autocast_only_for_low_precision():
    with autocast("cpu", torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with autocast("cpu", torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def _bf16_model_with_fp32_lora():
    """How a bf16 run holds its model: frozen weights bf16, the trainable LoRA fp32 (non-zero up), and the
    UNet's outputs made fp32 as Accelerator.prepare does to a model under mixed precision."""
    from accelerate.utils import convert_outputs_to_fp32

    c = tiny_components(0)
    for m in (c.unet, c.vae, c.text_encoder):
        m.to(torch.bfloat16).requires_grad_(False)
    inject(c.unet, "unet-attn", rank=2)
    mark_only_lora_trainable(c.unet)
    for name, p in c.unet.named_parameters():
        if p.requires_grad and ".up." in name:
            torch.nn.init.normal_(p, std=0.1)
    c.unet.forward = convert_outputs_to_fp32(c.unet.forward)
    return c


def test_weight_dtype_ignores_the_trainable_lora():
    c = _bf16_model_with_fp32_lora()
    assert weight_dtype(c.unet) == torch.bfloat16 and weight_dtype(c.vae) == torch.bfloat16
    assert any(p.dtype == torch.float32 for p in c.unet.parameters() if p.requires_grad)
    with sampling_autocast(c, "cpu"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_validation_samples_a_bf16_model_with_an_fp32_lora(tmp_path):
    """The issue-20 blocker: this raised "Input type (float) and bias type (c10::BFloat16)"."""
    cfg = RunConfig()
    cfg.data.resolution = 32
    cfg.validation.prompts = ["a red square"]
    cfg.validation.num_inference_steps = 1
    images = Validator(cfg, _bf16_model_with_fp32_lora(), torch.device("cpu"), tmp_path).images()
    assert len(images) == 1 and images[0].shape == (32, 32, 3) and images[0].dtype == "float32"
