"""The native safetensors file: round trip, header metadata, clear errors."""
import json

import pytest
import torch
from safetensors.torch import save_file

import sdlora
from sdlora.errors import SdloraError
from sdlora.lora import inject, inject_from_state_dict, load_native, lora_state_dict, native_metadata, save_native


def test_round_trip_with_metadata(tmp_path, make_net, randomize, tiny_input):
    net = make_net(0)
    inject(net, [r"blocks\.\d+\.to_(q|v)", "conv_in"], rank=4, alpha=2, dora=True)
    randomize(net)
    meta = native_metadata(rank=4, alpha=2, targets=["unet-attn"], base_model="CompVis/stable-diffusion-v1-4",
                           training_params={"lr": 1e-4, "steps": 500}, note="hello")
    path = save_native(tmp_path / "sub" / "my.safetensors", lora_state_dict(net), meta)
    assert sorted(p.name for p in path.parent.iterdir()) == ["my.safetensors"]  # no temp files left
    sd, header = load_native(path)
    assert header["sdlora_format"] == "native/1" and header["sdlora_version"] == sdlora.__version__
    assert (header["rank"], header["alpha"], header["base_model"], header["note"]) == (
        "4", "2", "CompVis/stable-diffusion-v1-4", "hello")
    assert json.loads(header["targets"]) == ["unet-attn"]
    assert json.loads(header["training_params"]) == {"lr": 1e-4, "steps": 500}
    fresh = make_net(0)
    inject_from_state_dict(fresh, sd)
    assert torch.allclose(fresh(tiny_input), net(tiny_input), atol=1e-6)


def test_dtype_is_kept(tmp_path):
    path = save_native(tmp_path / "half.safetensors", {"m.lora_up.weight": torch.ones(2, 2, dtype=torch.float16)})
    sd, header = load_native(path)
    assert sd["m.lora_up.weight"].dtype == torch.float16 and header["sdlora_format"] == "native/1"


def test_metadata_values_are_stringified_and_checked():
    assert native_metadata(rank=8, base_model=None) == {"rank": "8"}
    with pytest.raises(SdloraError, match="metadata field 'training_params' cannot be written as JSON"):
        native_metadata(training_params={"x": object()})


def test_save_refuses_non_tensors(tmp_path):
    with pytest.raises(SdloraError, match="'a.alpha' is a float, not a tensor"):
        save_native(tmp_path / "x.safetensors", {"a.alpha": 1.0})


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(SdloraError, match="missing.safetensors: LoRA file not found"):
        load_native(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(SdloraError, match="garbage.safetensors: not a readable safetensors file"):
        load_native(garbage)
    foreign = tmp_path / "kohya.safetensors"
    save_file({"lora_unet_x.alpha": torch.tensor(4.0)}, str(foreign), metadata={"ss_network_dim": "4"})
    with pytest.raises(SdloraError, match="kohya.safetensors: not an sdlora native LoRA file"):
        load_native(foreign)
    future = tmp_path / "future.safetensors"
    save_file({"a.alpha": torch.tensor(4.0)}, str(future), metadata={"sdlora_format": "native/9"})
    with pytest.raises(SdloraError, match="sdlora format 'native/9' is not supported"):
        load_native(future)
