"""kohya key tables, round trips, and parity with diffusers' own loader on the tiny pipeline."""
import json

import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats import apply, canonical as C
from sdlora.formats.io import save_lora_file
from sdlora.formats.kohya import from_kohya, to_kohya
from sdlora.formats.modules import component_paths
from sdlora.models import build_pipeline, tiny_components


# canonical module -> the kohya name A1111/ComfyUI/kohya write for it (literal, not computed)
KOHYA_NAMES = [
    ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
     "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"),
    ("unet", "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_out.0",
     "lora_unet_up_blocks_1_attentions_1_transformer_blocks_0_attn2_to_out_0"),
    ("unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
     "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj"),
    ("unet", "down_blocks.1.resnets.0.conv_shortcut", "lora_unet_down_blocks_1_resnets_0_conv_shortcut"),
    ("text_encoder", "text_model.encoder.layers.1.self_attn.out_proj",
     "lora_te_text_model_encoder_layers_1_self_attn_out_proj"),
]


def _module(rank, out, inp, alpha=None, kernel=()):
    params = {C.DOWN: torch.randn((rank, inp) + kernel), C.UP: torch.randn((out, rank) + (1,) * len(kernel))}
    if alpha is not None:
        params[C.ALPHA] = torch.tensor(alpha)
    return params


@pytest.mark.parametrize("component,path,name", KOHYA_NAMES)
def test_kohya_names_follow_the_table(component, path, name):
    lora = C.ungroup({(component, path): _module(2, 8, 8, alpha=1.0)})
    state, _ = to_kohya(lora)
    assert set(state) == {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"}
    back, _ = from_kohya(state)
    assert set(back) == set(lora) and all(torch.equal(back[k], lora[k]) for k in lora)


def test_round_trip_is_exact_with_conv_dora_and_mixed_ranks(tiny, lora_maker):
    lora = lora_maker(tiny, ("unet-transformer", "unet-conv"), ranks=(4, 2, 1), dora=True)
    state, meta = to_kohya(lora, {"ss_seed": "7"})
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in state)
    dora = next(k for k in state if k.endswith("resnets_0_conv1.dora_scale"))
    assert state[dora].shape[1:] == (1, 1, 1)  # LyCORIS/ComfyUI: one norm per output channel
    back, meta_back = from_kohya(state, meta)
    assert set(back) == set(lora) and all(torch.equal(back[k], lora[k]) for k in lora)
    assert meta_back["ss_seed"] == "7"


def test_missing_alpha_means_alpha_equals_rank():
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    state = {f"{name}.lora_down.weight": torch.randn(3, 320, 1, 1), f"{name}.lora_up.weight": torch.randn(320, 3, 1, 1)}
    lora, _ = from_kohya(state)
    assert float(lora["unet.down_blocks.0.attentions.0.proj_in.alpha"]) == 3.0


def test_metadata_has_kohya_fields():
    lora = C.ungroup({
        ("unet", "down_blocks.0.attentions.0.proj_in"): _module(8, 4, 4, alpha=4.0, kernel=(1, 1)),
        ("unet", "down_blocks.0.resnets.0.conv1"): _module(2, 4, 4, alpha=1.0, kernel=(3, 3)),
        ("text_encoder", "text_model.encoder.layers.0.mlp.fc1"): _module(8, 4, 4, alpha=4.0),
    })
    _, meta = to_kohya(lora, {"ss_learning_rate": "1e-4"})
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_base_model_version"] == "sd_v1"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("8", "4")  # 1x1 convs count as linear
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1"}
    assert meta["ss_learning_rate"] == "1e-4"


@pytest.mark.parametrize("key", [
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_z.lora_down.weight",  # no such module
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_weird.weight",  # no such parameter
    "lora_vae_decoder_conv_in.alpha",
])
def test_unknown_keys_are_named(key):
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    state = {f"{name}.lora_down.weight": torch.zeros(2, 320, 1, 1), f"{name}.lora_up.weight": torch.zeros(320, 2, 1, 1),
             key: torch.zeros(1)}
    with pytest.raises(SdloraError, match="1 key.*" + key.split(".")[0]):
        from_kohya(state, source="x.safetensors")


def test_input_axis_dora_is_refused():
    name = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    state = {f"{name}.lora_down.weight": torch.zeros(2, 768), f"{name}.lora_up.weight": torch.zeros(3072, 2),
             f"{name}.dora_scale": torch.ones(1, 768)}
    with pytest.raises(SdloraError, match="input axis"):
        from_kohya(state)


def _diffusers_outputs(state_or_path, probe, **kwargs):
    """Outputs of a fresh tiny pipeline after diffusers' own load_lora_weights (PEFT)."""
    pipe = build_pipeline(tiny_components(0))
    pipe.load_lora_weights(state_or_path, **kwargs)
    return probe(pipe.unet, pipe.text_encoder)


@pytest.mark.parametrize("presets", [("unet-attn",), ("unet-transformer",), ("unet-transformer", "unet-conv")])
def test_kohya_export_matches_diffusers_loader(presets, tmp_path, probe, tiny, lora_maker, diff):
    # Mixed ranks, one alpha (!= either rank): diffusers 0.42 reads a kohya file's alphas correctly only
    # while they are all equal (per-module alphas of attention layers fall back to the most common one).
    lora = lora_maker(tiny, presets, ranks=(4, 2), alphas=(3.0,))
    base = probe(tiny.unet, tiny.text_encoder)
    apply.attach(tiny, lora)
    ours = probe(tiny.unet, tiny.text_encoder)
    path = save_lora_file(tmp_path / "k.safetensors", lora, {}, "kohya", torch.float32)
    theirs = _diffusers_outputs(str(path), probe)
    errors = [diff(a, b) for a, b in zip(ours, theirs)]
    print(f"kohya export {'+'.join(presets)}: max |sdlora - diffusers| unet {errors[0]:.2e}, text {errors[1]:.2e}")
    assert max(errors) < 1e-4
    assert min(diff(a, b) for a, b in zip(ours, base)) > 1e-2  # the LoRA really changes both outputs


def test_kohya_dict_from_elsewhere_applies_like_diffusers(probe, diff):
    """A kohya dict written here by hand (names spelled out) gives the same outputs both ways."""
    model = tiny_components(0)
    gen = torch.Generator().manual_seed(3)
    shapes = {  # kohya name -> base weight shape of that tiny-model layer
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (32, 32),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_out_0": (32, 32),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj": (512, 64),
        "lora_unet_up_blocks_1_attentions_1_proj_out": (32, 32, 1, 1),
        "lora_unet_down_blocks_1_resnets_0_conv1": (64, 32, 3, 3),
        "lora_unet_up_blocks_0_resnets_1_conv_shortcut": (64, 96, 1, 1),
        "lora_unet_mid_block_resnets_0_time_emb_proj": (64, 128),
        "lora_te_text_model_encoder_layers_1_self_attn_q_proj": (32, 32),
        "lora_te_text_model_encoder_layers_1_self_attn_k_proj": (32, 32),
        "lora_te_text_model_encoder_layers_1_self_attn_v_proj": (32, 32),
        "lora_te_text_model_encoder_layers_1_self_attn_out_proj": (32, 32),
        "lora_te_text_model_encoder_layers_0_mlp_fc2": (32, 64),
    }
    state = {}
    for i, (name, shape) in enumerate(shapes.items()):
        rank = 2 + i % 3  # 2, 3, 4: ranks differ per module
        state[f"{name}.lora_down.weight"] = torch.randn((rank, shape[1]) + shape[2:], generator=gen) * 0.3
        state[f"{name}.lora_up.weight"] = torch.randn((shape[0], rank) + (1,) * (len(shape) - 2), generator=gen) * 0.3
        state[f"{name}.alpha"] = torch.tensor(1.0)  # one alpha: diffusers mis-scales mixed or missing ones
    lora, _ = from_kohya(state, module_paths=component_paths(model.unet, model.text_encoder))
    apply.attach(model, lora)
    ours = probe(model.unet, model.text_encoder)
    theirs = _diffusers_outputs(dict(state), probe)
    errors = [diff(a, b) for a, b in zip(ours, theirs)]
    print(f"hand-written kohya dict: max |sdlora - diffusers| unet {errors[0]:.2e}, text {errors[1]:.2e}")
    assert max(errors) < 1e-4
