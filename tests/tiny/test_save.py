import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open

from sdlora.errors import SdloraError
from sdlora.models import load_tokenizer
from sdlora.tiny.arch import build_models
from sdlora.tiny.save import model_index, save_sd_tiny


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("sd-tiny")
    unet, vae, text_encoder = build_models("micro", seed=2)
    vae.register_to_config(scaling_factor=0.75)
    reference = {name: {k: v.clone() for k, v in m.state_dict().items()}
                 for name, m in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
    sizes = save_sd_tiny(out, unet=unet, vae=vae, text_encoder=text_encoder)
    return out, sizes, reference


def test_layout_is_sd14_diffusers_without_tokenizer(saved):
    out, sizes, _ = saved
    assert sorted(p.name for p in out.iterdir()) == ["model_index.json", "scheduler", "text_encoder", "unet", "vae"]
    assert json.loads((out / "model_index.json").read_text()) == json.loads(json.dumps(model_index()))
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert (scheduler["beta_schedule"], scheduler["beta_start"], scheduler["beta_end"],
            scheduler["num_train_timesteps"], scheduler["prediction_type"]) == \
        ("scaled_linear", 0.00085, 0.012, 1000, "epsilon")
    assert set(sizes) == {"unet", "vae", "text_encoder"} and all(b > 0 for b in sizes.values())


def test_weights_are_fp16_and_text_encoder_keys_canonical(saved):
    out, _, _ = saved
    for path in (out / "unet" / "diffusion_pytorch_model.safetensors", out / "text_encoder" / "model.safetensors"):
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
            assert all(f.get_tensor(k).dtype == torch.float16 for k in keys)
    with safe_open(str(out / "text_encoder" / "model.safetensors"), "pt") as f:
        assert all(k.startswith("text_model.") for k in f.keys())


def test_diffusers_loads_it_back_with_the_bundled_tokenizer(saved):
    out, _, reference = saved
    pipe = StableDiffusionPipeline.from_pretrained(out, tokenizer=load_tokenizer())
    assert pipe.vae.config.scaling_factor == 0.75 and pipe.vae_scale_factor == 4
    assert pipe.text_encoder.dtype == pipe.unet.dtype == torch.float32  # fp16 files, fp32 by default
    for name in ("unet", "vae", "text_encoder"):
        loaded = getattr(pipe, name).state_dict()
        assert set(loaded) == set(reference[name])
        for key, value in reference[name].items():
            assert torch.equal(loaded[key].half(), value.half()), (name, key)


def test_over_budget_is_an_error(tmp_path):
    unet, vae, text_encoder = build_models("micro")
    with pytest.raises(SdloraError, match="budget"):
        save_sd_tiny(tmp_path, unet=unet, vae=vae, text_encoder=text_encoder, max_bytes=1000)
