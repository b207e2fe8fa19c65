"""A LoRA trained with v-prediction and zero terminal SNR is sampled that way by `sdlora generate`."""
import numpy as np
import pytest
import torch
from PIL import Image

from sdlora.config import RunConfig
from sdlora.errors import SdloraError
from sdlora.formats import apply, save_lora_file
from sdlora.generate.job import GenerateJob, generate
from sdlora.generate.prediction import NoiseSettings, settings_from_metadata, training_metadata
from sdlora.generate.loras import LoraSpec
from sdlora.generate.prompts import PromptSpec
from sdlora.train.export import lora_metadata

from .conftest import SIZE, STEPS, random_lora


def test_the_trainers_metadata_reads_back():
    cfg = RunConfig()
    cfg.train.prediction_type, cfg.train.zero_terminal_snr = "v_prediction", True
    meta = lora_metadata(cfg, step=1, epoch=1, dataset={}, base="sd14", started=0.0)
    assert meta["ss_v_parameterization"] == "True" and meta["ss_zero_terminal_snr"] == "True"
    assert settings_from_metadata([("a", meta), ("b", {})]) == NoiseSettings("v_prediction", True)
    plain = lora_metadata(RunConfig(), step=1, epoch=1, dataset={}, base="sd14", started=0.0)
    assert settings_from_metadata([("a", plain)]) == NoiseSettings()  # epsilon: the model's own config
    with pytest.raises(SdloraError, match="different noise schedules.*a: .*b: "):
        settings_from_metadata([("a", meta), ("b", plain)])


def test_given_settings_win_over_the_files():
    files = NoiseSettings("v_prediction", True)
    assert NoiseSettings().over(files) == files
    assert NoiseSettings(None, False, "leading").over(files) == NoiseSettings("v_prediction", False, "leading")


def test_overrides():
    assert NoiseSettings().overrides() == {}
    assert NoiseSettings("v_prediction", True).overrides() == {
        "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}
    assert NoiseSettings(None, True, "leading").overrides()["timestep_spacing"] == "leading"
    with pytest.raises(SdloraError, match="spacing"):
        NoiseSettings(timestep_spacing="middle").overrides()


def test_generate_samples_a_zero_snr_lora_with_its_schedule(tmp_path, components):
    lora = save_lora_file(tmp_path / "ztsnr.safetensors", random_lora(components, 3, text_encoder=False),
                          training_metadata("v_prediction", True), "kohya", dtype=torch.float32)
    spec = PromptSpec("a red square", seed=1, steps=STEPS, width=SIZE, height=SIZE)
    job = GenerateJob([spec], tmp_path / "pndm", loras=[LoraSpec(lora)], contact_sheet=False)
    with pytest.raises(SdloraError, match="'pndm' cannot sample .*zero terminal SNR.*ddim"):
        generate(job, components)  # PLMS divides by the zero signal: refused before any image
    assert not list((tmp_path / "pndm").glob("*.png"))

    def image(out, noise=None):
        apply.detach(components)
        job = GenerateJob([spec.replace(scheduler="ddim")], tmp_path / out, loras=[LoraSpec(lora)],
                          contact_sheet=False, noise=noise)
        return np.asarray(Image.open(generate(job, components).images[0]))

    # read from the file: the same images as when told; other images when told to ignore it
    assert np.array_equal(image("auto"), image("told", NoiseSettings("v_prediction", True)))
    assert not np.array_equal(image("auto"), image("overruled", NoiseSettings("epsilon", False)))
