import pytest
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.generate.pngmeta import (Parameters, format_pairs, format_parameters, parse_pairs, parse_parameters,
                                     read_parameters, save_png)

FIELDS = {"Steps": "30", "Sampler": "DPM++ 2M Karras", "CFG scale": "7.5", "Seed": "42", "Size": "512x768",
          "Model": "stable-diffusion-v1-4", "Lora hashes": "style: 0123456789ab, subject: ba9876543210",
          "Lora weights": "style: 0.8, subject: 1.0", "Version": "sdlora 0.1.0"}

CASES = [
    Parameters("a cat", "", FIELDS),
    Parameters("a cat, sitting: on a mat", "blurry, lowres", FIELDS),
    Parameters("line one\nline two", "neg one\nneg two", FIELDS),
    Parameters("ein Kätzchen 🐈 \"quoted\"", "ünïcode", {**FIELDS, "Model": 'we"ird, name'}),
]


@pytest.mark.parametrize("params", CASES)
def test_text_round_trip(params):
    assert parse_parameters(format_parameters(params)) == params


@pytest.mark.parametrize("params", CASES)
def test_png_round_trip(tmp_path, params):
    path = save_png(Image.new("RGB", (8, 8), (1, 2, 3)), tmp_path / "sub" / "x.png", format_parameters(params))
    assert read_parameters(path) == params
    with Image.open(path) as image:
        assert image.size == (8, 8) and image.getpixel((0, 0)) == (1, 2, 3)


def test_reads_a1111_text():
    text = ("masterpiece, a cat <lora:style:0.8>\nNegative prompt: bad hands\n"
            'Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 512x512, Model hash: 7460a6fa, '
            'Model: sd-v1-4, Lora hashes: "style: 0123456789ab", Version: v1.7.0')
    params = parse_parameters(text)
    assert params.prompt == "masterpiece, a cat <lora:style:0.8>"
    assert params.negative_prompt == "bad hands"
    assert params.fields["Sampler"] == "Euler a" and params.fields["Seed"] == "1234"
    assert params.fields["Lora hashes"] == "style: 0123456789ab"
    assert parse_pairs(params.fields["Lora hashes"]) == {"style": "0123456789ab"}


def test_prompt_only_text_has_no_settings():
    params = parse_parameters("just a prompt, with: a colon")
    assert params == Parameters("just a prompt, with: a colon", "", {})


def test_pairs_round_trip():
    pairs = {"style": "0.8", "subject_v2": "1.0"}
    assert parse_pairs(format_pairs(pairs)) == pairs


def test_png_without_parameters_is_an_error(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(SdloraError, match="no `parameters` text chunk"):
        read_parameters(path)
