import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C

KEYS = [
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_down.weight",
     ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "lora_down.weight")),
    ("unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0.lora_up.weight",
     ("unet", "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0", "lora_up.weight")),
    ("text_encoder.text_model.encoder.layers.11.mlp.fc2.alpha",
     ("text_encoder", "text_model.encoder.layers.11.mlp.fc2", "alpha")),
    ("unet.mid_block.resnets.1.conv1.dora_scale", ("unet", "mid_block.resnets.1.conv1", "dora_scale")),
]


@pytest.mark.parametrize("key,parts", KEYS)
def test_split_and_join_are_inverse(key, parts):
    assert C.split_key(key) == parts
    assert C.join_key(*parts) == key


@pytest.mark.parametrize("key", ["vae.decoder.conv_in.lora_down.weight", "unet.a.b.weight", "unet", "lora_unet_x.alpha"])
def test_split_rejects_non_canonical_keys(key):
    with pytest.raises(SdloraError, match="not a canonical LoRA key"):
        C.split_key(key)


def _module(rank=4, out=8, inp=6, conv=False, alpha=None):
    tail = (3, 3) if conv else ()
    params = {C.DOWN: torch.randn((rank, inp) + tail), C.UP: torch.randn((out, rank) + ((1, 1) if conv else ()))}
    if alpha is not None:
        params[C.ALPHA] = torch.tensor(alpha)
    return params


def test_normalize_makes_alpha_explicit_and_equal_to_rank_when_missing():
    lora = C.ungroup({("unet", "a.b"): _module(rank=3), ("text_encoder", "text_model.x"): _module(rank=2, alpha=7.5)})
    out = C.normalize(lora)
    assert out["unet.a.b.alpha"].dim() == 0 and float(out["unet.a.b.alpha"]) == 3.0
    assert out["unet.a.b.alpha"].dtype == torch.float32
    assert float(out["text_encoder.text_model.x.alpha"]) == 7.5


@pytest.mark.parametrize("bad,message", [
    ({C.DOWN: torch.zeros(4, 6)}, "has no lora_up.weight"),
    ({C.DOWN: torch.zeros(4, 6), C.UP: torch.zeros(8, 3)}, "does not match the rank"),
    ({C.DOWN: torch.zeros(4, 6), C.UP: torch.zeros(8, 4, 1, 1)}, "neither Linear"),
    ({C.DOWN: torch.zeros(4, 6), C.UP: torch.zeros(8, 4), C.ALPHA: torch.ones(2)}, "single number"),
    ({C.DOWN: torch.zeros(4, 6), C.UP: torch.zeros(8, 4), C.DORA: torch.ones(8)}, "dora_scale has shape"),
])
def test_normalize_names_the_broken_module(bad, message):
    with pytest.raises(SdloraError, match=message) as err:
        C.normalize(C.ungroup({("unet", "a.b"): bad}))
    assert "unet.a.b" in str(err.value)


def test_delta_is_scaled_up_times_down_for_linear_and_conv():
    lin = _module(rank=4, alpha=2.0)
    assert torch.allclose(C.delta(lin), 0.5 * lin[C.UP] @ lin[C.DOWN], atol=1e-6)
    conv = _module(rank=2, conv=True, alpha=6.0)
    expected = 3.0 * conv[C.UP].flatten(1) @ conv[C.DOWN].flatten(1)  # (out, in*3*3)
    assert C.delta(conv).shape == (8, 6 * 9) and torch.allclose(C.delta(conv), expected, atol=1e-5)


def test_parameter_count_skips_alphas():
    lora = C.normalize(C.ungroup({("unet", "a"): _module(rank=4, out=8, inp=6)}))
    assert C.parameter_count(lora) == 4 * 6 + 8 * 4


def test_dora_shape_is_one_value_per_output_row():
    assert C.dora_shape(_module(out=8)) == (8, 1)
    assert C.dora_shape(_module(out=8, conv=True)) == (8, 1, 1, 1)
