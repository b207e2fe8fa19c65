import numpy as np
import pytest
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.generate.job import GenerateJob, generate, model_label, slug
from sdlora.generate.loras import LoraSpec, short_hash
from sdlora.generate.pngmeta import parse_pairs, read_parameters
from sdlora.generate.prompts import PromptSpec

SPEC = PromptSpec("a blue star, large", "blurry", seed=11, steps=2, cfg=3.5, width=32, height=24, scheduler="euler")


def test_generate_writes_pngs_with_parameters_and_a_contact_sheet(tmp_path, components, tiny_model):
    other = SPEC.replace(prompt="a yellow moon", negative_prompt="", seed=100, scheduler="dpmpp_2m_karras", width=40)
    job = GenerateJob([SPEC, other], tmp_path / "out", loras=[LoraSpec(tiny_model["style"], 0.7)],
                      num_images=3, batch_size=2)
    result = generate(job, components)
    assert [p.name for p in result.images] == [
        "00000-11-a_blue_star_large.png", "00001-12-a_blue_star_large.png", "00002-13-a_blue_star_large.png",
        "00003-100-a_yellow_moon.png", "00004-101-a_yellow_moon.png", "00005-102-a_yellow_moon.png"]
    params = read_parameters(result.images[1])
    assert params.prompt == SPEC.prompt and params.negative_prompt == "blurry"
    assert {k: params.fields[k] for k in ("Steps", "Sampler", "CFG scale", "Seed", "Size")} == {
        "Steps": "2", "Sampler": "Euler", "CFG scale": "3.5", "Seed": "12", "Size": "32x24"}
    assert parse_pairs(params.fields["Lora hashes"]) == {"style": short_hash(tiny_model["style"])}
    assert parse_pairs(params.fields["Lora weights"]) == {"style": "0.7"}
    last = read_parameters(result.images[5])
    assert last.fields["Sampler"] == "DPM++ 2M Karras" and last.fields["Size"] == "40x24" and last.negative_prompt == ""
    with Image.open(result.images[5]) as image:
        assert image.size == (40, 24)
    with Image.open(result.contact_sheet) as sheet:
        assert sheet.width >= 2 * 40 and sheet.height >= 2 * 24  # 6 images, 3 per row


def test_merge_gives_the_unmerged_images(tmp_path, tiny_model):
    from sdlora.models import tiny_components

    loras = [LoraSpec(tiny_model["style"], 0.8), LoraSpec(tiny_model["subject"], 1.0)]
    plain = generate(GenerateJob([SPEC], tmp_path / "a", loras=loras, contact_sheet=False), tiny_components(0))
    merged = generate(GenerateJob([SPEC], tmp_path / "b", loras=loras, merge=True, contact_sheet=False),
                      tiny_components(0))
    a, b = (np.asarray(Image.open(r.images[0]), np.int16) for r in (plain, merged))
    assert np.abs(a - b).max() <= 1 and plain.contact_sheet is None


def test_no_prompts_is_an_error(tmp_path, components):
    with pytest.raises(SdloraError, match="no prompts"):
        generate(GenerateJob([], tmp_path), components)


@pytest.mark.parametrize("source, label", [
    ("CompVis/stable-diffusion-v1-4", "stable-diffusion-v1-4"),
    ("/models/sd-v1-4.ckpt", "sd-v1-4"),
    ("/models/my-model.safetensors", "my-model"),
    ("/models/diffusers-folder/", "diffusers-folder"),
    ("tiny", "tiny"),
])
def test_model_label(source, label):
    assert model_label(source) == label


@pytest.mark.parametrize("text, expected", [
    ("A cat, on a mat!", "a_cat_on_a_mat"),
    ("  ***  ", "image"),
    ("x" * 60, "x" * 40),
    ("Ünïcode prompt", "n_code_prompt"),
])
def test_slug(text, expected):
    assert slug(text) == expected
