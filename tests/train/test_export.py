import json

import pytest
import torch
from safetensors import safe_open

from sdlora.config import RunConfig
from sdlora.errors import SdloraError
from sdlora.lora import inject, lora_modules
from sdlora.models import tiny_components
from sdlora.train.export import base_norm, delta_norm, lora_filenames, lora_metadata, save_lora


@pytest.fixture
def lora_model():
    c = tiny_components(0)
    inject(c.unet, "unet-attn", rank=2)
    inject(c.text_encoder, "text-encoder", rank=2)
    return c


def test_metadata_has_kohya_fields():
    cfg = RunConfig()
    cfg.lora.rank, cfg.train.seed, cfg.data.resolution = 8, 7, 256
    summary = {"images": 5, "class_images": 2, "sources": [{"path": "/d", "images": 5, "items": 5}]}
    meta = lora_metadata(cfg, step=100, epoch=3, dataset=summary, base="sd14", started=1.0)
    assert meta["ss_network_dim"] == "8" and meta["ss_network_alpha"] == "8" and meta["ss_seed"] == "7"
    assert meta["ss_steps"] == "100" and meta["ss_epoch"] == "3" and meta["ss_resolution"] == "(256, 256)"
    assert meta["ss_sd_model_name"] == "sd14" and meta["ss_learning_rate"] == "0.0001"
    assert json.loads(meta["ss_dataset_dirs"]) == {"/d": {"n_repeats": 1, "img_count": 5}}
    assert json.loads(meta["sdlora_dataset"])["class_images"] == 2
    assert all(isinstance(v, str) for v in meta.values())


def test_filenames_per_format():
    cfg = RunConfig()
    cfg.save.name, cfg.save.formats = "me", ["kohya", "diffusers", "kohya"]
    assert lora_filenames(cfg) == {"kohya": "me.safetensors", "diffusers": "me.diffusers.safetensors"}


def test_save_writes_every_format_with_te_keys(lora_model, tmp_path):
    cfg = RunConfig()
    cfg.save.formats = ["kohya", "diffusers"]
    paths = save_lora(tmp_path, lora_model, cfg, {"ss_steps": "1"})
    assert [p.name for p in paths] == ["lora.safetensors", "lora.diffusers.safetensors"]
    with safe_open(str(paths[0]), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        down = next(k for k in keys if k.endswith(".lora_down.weight"))
        assert f.get_tensor(down).dtype == torch.float16  # save.precision default
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_") for k in keys)
    assert meta["ss_steps"] == "1"


def test_non_finite_or_fp16_overflowing_lora_is_not_written(lora_model, tmp_path):
    cfg = RunConfig()
    save_lora(tmp_path, lora_model, cfg, {})
    good = (tmp_path / "lora.safetensors").read_bytes()
    wrapper = next(iter(lora_modules(lora_model.unet).values()))
    with torch.no_grad():
        wrapper.adapters["default"].up.weight[0, 0] = 1e6  # finite in fp32, inf in fp16
    with pytest.raises(SdloraError, match="NaN/inf"):
        save_lora(tmp_path, lora_model, cfg, {})
    assert (tmp_path / "lora.safetensors").read_bytes() == good


def test_delta_norm_zero_until_up_moves(lora_model):
    assert delta_norm(lora_model) == 0.0 and base_norm(lora_model) > 0
    wrapper = next(iter(lora_modules(lora_model.unet).values()))
    with torch.no_grad():
        wrapper.adapters["default"].up.weight.fill_(0.01)
    expected = wrapper.delta_weight("default").norm().item()
    assert delta_norm(lora_model) == pytest.approx(expected)
