import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats.io import load_lora_file
from sdlora.formats.modules import component_paths
from sdlora.formats.native import from_native, to_native
from sdlora.lora import inject, lora_state_dict, save_native


def test_round_trip_is_exact_and_marked(tiny, lora_maker):
    lora = lora_maker(tiny, ("unet-transformer", "unet-conv"), ranks=(4, 1), dora=True)
    state, meta = to_native(lora, {"base_model": "CompVis/stable-diffusion-v1-4"})
    assert set(state) == set(lora)  # the canonical keys themselves
    assert meta["sdlora_format"] == "native/1" and "sdlora_version" in meta
    back, meta_back = from_native(state, meta)
    assert all(torch.equal(back[k], lora[k]) for k in lora) and meta_back["base_model"] == meta["base_model"]


def test_a_single_model_native_file_is_placed_by_module_table(tiny, tmp_path):
    """sdlora.lora.save_native of a bare lora_state_dict (no component prefixes) still loads."""
    inject(tiny.unet, "unet-attn", rank=2)
    inject(tiny.text_encoder, "text-encoder", rank=2)
    sd = {**lora_state_dict(tiny.unet), **lora_state_dict(tiny.text_encoder)}
    path = save_native(tmp_path / "bare.safetensors", sd)
    lora, _, fmt = load_lora_file(path, module_paths=component_paths(tiny.unet, tiny.text_encoder))
    assert fmt == "native"
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_down.weight" in lora
    assert "text_encoder.text_model.encoder.layers.0.mlp.fc1.alpha" in lora  # transformers-5 path made canonical
    assert len(lora) == len(sd)


def test_other_native_versions_and_unknown_modules_are_refused(tiny, lora_maker):
    state, meta = to_native(lora_maker(tiny))
    with pytest.raises(SdloraError, match="upgrade sdlora"):
        from_native(state, {**meta, "sdlora_format": "native/2"})
    with pytest.raises(SdloraError, match="unet.nowhere.alpha"):
        from_native({**state, "unet.nowhere.alpha": torch.tensor(1.0)}, meta)
