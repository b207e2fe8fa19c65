"""Resolving --model values, dtype names, and the "tiny" name."""
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.models import load_components
from sdlora.models import loader
from sdlora.models.checkpoint_io import write_safetensors
from sdlora.models.loader import parse_dtype, resolve_model


@pytest.mark.parametrize("value, kind", [
    ("CompVis/stable-diffusion-v1-4", "hub"),
    ("runwayml/stable-diffusion-v1-5", "hub"),
    ("some-user/my_model.v2", "hub"),
])  # fmt: skip
def test_hub_ids(value, kind):
    assert resolve_model(value) == (kind, value)


def test_existing_paths(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    assert resolve_model(tmp_path / "m.safetensors") == ("file", tmp_path / "m.safetensors")
    assert resolve_model(str(tmp_path / "dir")) == ("folder", tmp_path / "dir")


@pytest.mark.parametrize("value, message", [
    ("no-such-model", "model 'no-such-model': no such file or folder"),
    ("models/missing.ckpt", "model 'models/missing.ckpt': no such file or folder"),
    ("./a/b/c", "no such file or folder"),
])  # fmt: skip
def test_missing_paths(value, message):
    with pytest.raises(SdloraError, match=message):
        resolve_model(value)


def test_existing_file_of_other_type(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SdloraError, match=r"notes\.txt: not a model checkpoint; expected one of \.safetensors"):
        load_components(tmp_path / "notes.txt")


@pytest.mark.parametrize("value, expected", [
    (None, torch.float32), ("fp16", torch.float16), ("BF16", torch.bfloat16), ("float32", torch.float32),
    (torch.float16, torch.float16),
])  # fmt: skip
def test_parse_dtype(value, expected):
    assert parse_dtype(value) is expected


@pytest.mark.parametrize("value", ["int8", torch.int64, 3])
def test_parse_dtype_rejects(value):
    with pytest.raises(SdloraError, match="dtype .*: expected one of fp32"):
        parse_dtype(value)


def test_tiny_not_installed_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(loader, "tiny_model_dir", lambda: tmp_path / "absent")
    with pytest.raises(SdloraError, match=r"model 'tiny': the bundled sd-tiny model is not installed \(expected .*absent\)"):
        load_components("tiny")


def test_tiny_loads_the_bundled_folder(monkeypatch, tmp_path, tiny_models, save_folder, assert_same_weights):
    # sd-tiny may ship without tokenizer/: the bundled CLIP tokenizer fills in.
    folder = save_folder(tiny_models, tmp_path / "sd-tiny", tokenizer=False)
    monkeypatch.setattr(loader, "tiny_model_dir", lambda: folder)
    loaded = load_components("tiny", device="cpu")
    assert loaded.source == "tiny" and len(loaded.tokenizer) == 49408
    assert_same_weights(tiny_models, loaded)


def test_the_real_bundled_tiny_when_present():
    if not loader.tiny_model_dir().is_dir():
        pytest.skip("sd-tiny assets not shipped yet")
    loaded = load_components("tiny")
    assert loaded.unet.config.cross_attention_dim == loaded.text_encoder.config.hidden_size


def test_single_file_is_checked_against_sd14(tmp_path, tiny_ldm):
    # Through load_components a file always meets the SD 1.4 architecture: a tiny one is rejected by name.
    write_safetensors(tmp_path / "tiny.safetensors", tiny_ldm)
    with pytest.raises(SdloraError, match=r"tiny\.safetensors: unexpected key .*not an SD 1\.x architecture"):
        load_components(tmp_path / "tiny.safetensors", dtype="fp16")
