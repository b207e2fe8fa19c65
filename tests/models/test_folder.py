"""Diffusers-layout folders: exact loading, bundled fallbacks, and clear errors."""
import json
import shutil

import pytest
import torch
from diffusers import DDIMScheduler, PNDMScheduler

from sdlora.errors import SdloraError
from sdlora.models.folder import load_folder


def test_round_trip_is_exact(tiny_folder, tiny_models, assert_same_weights):
    loaded = load_folder(tiny_folder)
    assert_same_weights(tiny_models, loaded)
    assert isinstance(loaded.scheduler, PNDMScheduler) and loaded.source == str(tiny_folder)
    assert loaded.tokenizer("a photo of a red circle").input_ids == [49406, 320, 1125, 539, 320, 736, 7117, 49407]
    assert not loaded.vae.training


def test_dtype(tiny_folder):
    loaded = load_folder(tiny_folder, torch.bfloat16)
    for module in loaded.modules().values():
        assert {p.dtype for p in module.parameters()} == {torch.bfloat16}


def test_missing_tokenizer_and_scheduler_fall_back_to_bundled(tiny_models, tmp_path, save_folder):
    folder = save_folder(tiny_models, tmp_path / "m", tokenizer=False, scheduler=False)
    loaded = load_folder(folder)
    assert len(loaded.tokenizer) == 49408 and loaded.tokenizer("a red circle").input_ids[0] == 49406
    assert isinstance(loaded.scheduler, PNDMScheduler) and loaded.scheduler.config.beta_end == 0.012


def test_scheduler_class_from_config(tiny_models, tmp_path, save_folder):
    folder = save_folder(tiny_models, tmp_path / "m")
    DDIMScheduler.from_config(tiny_models.scheduler.config).save_pretrained(folder / "scheduler")
    assert isinstance(load_folder(folder).scheduler, DDIMScheduler)
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, "_class_name": "FancyScheduler"}))
    with pytest.raises(SdloraError, match=r"scheduler_config\.json: unknown scheduler 'FancyScheduler'"):
        load_folder(folder)


@pytest.mark.parametrize("remove", [["unet"], ["unet", "text_encoder"]])
def test_missing_required_part(tiny_folder, tmp_path, remove):
    folder = tmp_path / "partial"
    shutil.copytree(tiny_folder, folder)
    for name in remove:
        shutil.rmtree(folder / name)
    with pytest.raises(SdloraError, match="partial: not a diffusers SD model folder, missing " + ", ".join(f"{n}/" for n in remove)):
        load_folder(folder)


def test_truncated_weights_name_the_part(tiny_folder, tmp_path):
    folder = tmp_path / "cut"
    shutil.copytree(tiny_folder, folder)
    (weights,) = (folder / "unet").glob("*.safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(SdloraError, match=r"cut/unet: could not load unet \(UNet2DConditionModel\)") as info:
        load_folder(folder)
    assert "\n" not in str(info.value)


def test_fp16_variant_only_folder(tiny_models, tmp_path, assert_same_weights):
    folder = tmp_path / "fp16"
    for name in ("unet", "vae", "text_encoder"):
        getattr(tiny_models, name).save_pretrained(folder / name, variant="fp16")
    loaded = load_folder(folder)
    assert loaded.unet.conv_in.weight.dtype == torch.float32
    assert torch.equal(loaded.unet.conv_in.weight, tiny_models.unet.conv_in.weight)
