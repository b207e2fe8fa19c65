"""Every precision through what samples from the model: validation grids and DreamBooth class images in a
training run, and compare with a LoRA file. fp16 training on the CPU is refused before anything is written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.evaluate.compare import CompareJob, compare
from sdlora.formats import apply, save_lora_file
from sdlora.generate.loras import LoraSpec
from sdlora.generate.prompts import PromptSpec
from sdlora.lora import inject
from sdlora.models import tiny_components
from sdlora.train import train


def _dreambooth_cfg(make_cfg, tiny_data, tmp_path, precision):
    classes = tmp_path / "class"
    sets = [f'data.sources = [{{path = "{tiny_data}", prompt = "sks square"}}, '
            f'{{path = "{classes}", role = "class", prompt = "a square", num_images = 1}}]',
            'validation.prompts = ["sks square"]']
    return make_cfg(sets=sets, data=[], **{"train.mixed_precision": precision, "train.steps": 1,
                                           "train.batch_size": 1, "validation.num_inference_steps": 1})


def test_bf16_run_with_validation_samples_and_class_images(make_cfg, tiny_data, tmp_path):
    """The issue-20 blocker end to end (fp32 runs with samples and class images: test_loop, test_classgen)."""
    result = train(_dreambooth_cfg(make_cfg, tiny_data, tmp_path, "bf16"))
    run = result.run_dir
    assert result.status == "done" and len(list((tmp_path / "class").glob("class-*.png"))) == 1
    assert (run / "samples" / "step-000000-base.png").is_file() and (run / "samples" / "step-000001.png").is_file()
    log = (run / "train.log").read_text()
    assert "bf16 on the CPU" in log and "precision bf16: as configured" in log


def test_fp16_training_on_the_cpu_is_refused_before_anything_is_written(make_cfg, tiny_data, tmp_path):
    cfg = _dreambooth_cfg(make_cfg, tiny_data, tmp_path, "fp16")
    with pytest.raises(SdloraError, match='train.mixed_precision = "fp16" needs a GPU'):
        train(cfg)
    assert not Path(cfg.save.output_dir).exists() and not (tmp_path / "class").exists()


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory):
    """A kohya file with a random rank-2 UNet attention LoRA for tiny_components(0)."""
    c = tiny_components(0)
    inject(c.unet, "unet-attn", rank=2, adapter="tmp")
    gen = torch.Generator().manual_seed(1)
    for name, param in c.unet.named_parameters():
        if ".adapters.tmp.up." in name:
            param.data = torch.randn(param.shape, generator=gen) * 0.2
    return save_lora_file(tmp_path_factory.mktemp("lora") / "style.safetensors", apply.extract(c, "tmp"), {},
                          "kohya", dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])  # fp32: tests/evaluate/test_compare.py
def test_compare_a_lora_in_each_precision(tmp_path, lora_file, dtype):
    components = tiny_components(0)
    for module in (components.unet, components.vae, components.text_encoder):
        module.to(dtype)
    spec = PromptSpec(prompt="a red square", seed=3, steps=2, cfg=1.0, width=32, height=32)
    result = compare(CompareJob([spec], [LoraSpec(lora_file)], tmp_path, weights=[1.0]), components)
    base, styled = (np.asarray(s.image, dtype=np.float32) for s in result.samples[0])
    assert result.grid_path.is_file() and np.isfinite(styled).all()
    assert np.abs(base - styled).mean() > 0.5  # the LoRA changes the image in this precision too
