import hashlib

import pytest
import torch
from formats_helpers import make_lora
from safetensors import safe_open
from safetensors.torch import save_file

from sdlora.errors import SdloraError
from sdlora.formats.io import convert_lora_file, load_lora_file, read_safetensors, save_lora_file


@pytest.fixture
def lora(tiny):
    return make_lora(tiny, ("unet-transformer", "unet-conv"), ranks=(4, 2), dora=True)


def _equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fmt", ["kohya", "diffusers", "native"])
def test_save_then_load_is_exact_in_fp32(fmt, lora, tmp_path):
    path = save_lora_file(tmp_path / f"{fmt}.safetensors", lora, {"note": "hi", "steps": 100}, fmt, torch.float32)
    back, meta, found = load_lora_file(path)
    assert found == fmt and _equal(back, lora)
    assert meta["note"] == "hi" and meta["steps"] == "100"  # metadata is stringified
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_default_dtype_is_fp16_and_kohya_hash_is_the_data_hash(lora, tmp_path):
    path = save_lora_file(tmp_path / "k.safetensors", lora)
    blob = path.read_bytes()
    header = int.from_bytes(blob[:8], "little")
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["sshs_model_hash"] == hashlib.sha256(blob[8 + header:]).hexdigest()
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}


def test_conversions_chain_back_exactly(lora, tmp_path):
    first = save_lora_file(tmp_path / "a.safetensors", lora, {"ss_seed": "3"}, "kohya", torch.float32)
    chain = [("diffusers", "b"), ("native", "c"), ("kohya", "d")]
    src = first
    for fmt, name in chain:
        dst = tmp_path / f"{name}.safetensors"
        assert convert_lora_file(src, dst, fmt)[1] == fmt
        src = dst
    back, meta, fmt = load_lora_file(src)
    assert fmt == "kohya" and _equal(back, lora) and meta["ss_seed"] == "3"
    assert "lora_adapter_metadata" not in meta  # layout metadata of the diffusers step is not carried


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(SdloraError, match="file not found"):
        load_lora_file(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(SdloraError, match="not a readable safetensors file"):
        load_lora_file(bad)
    pickle = tmp_path / "old.ckpt"
    pickle.write_bytes(b"whatever")
    with pytest.raises(SdloraError, match="pickle"):
        read_safetensors(pickle)


@pytest.mark.parametrize("state,message", [
    ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha": torch.tensor(1.0)}, "for SDXL"),
    ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 1024),
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.zeros(320, 4)},
     "for SD 2.x"),
    ({"lora_unet_conv_in.hada_w1_a": torch.zeros(2, 2), "lora_unet_conv_in.lokr_w1": torch.zeros(2, 2)},
     "LoHa.*LoKr"),
    ({"lora_unet_conv_in.lora_down.weight": torch.zeros(2, 4, 3, 3), "lora_unet_conv_in.lora_up.weight":
      torch.zeros(320, 2, 1, 1), "lora_unet_conv_in.scale": torch.tensor(1.0)}, "lora_unet_conv_in.scale"),
])
def test_unsupported_files_are_refused_whole_with_the_reason(state, message, tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file(state, str(path))
    with pytest.raises(SdloraError, match=message) as err:
        load_lora_file(path)
    assert str(path) in str(err.value)
