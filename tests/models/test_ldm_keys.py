"""LDM <-> diffusers key tables: literal SD 1.4 pairs, bijectivity, round trips, and diffusers' own converter."""
import pytest
import torch
from diffusers.loaders import single_file_utils as dsf

from sdlora.models import skeleton
from sdlora.models.names import canonical_te_path
from sdlora.models.ldm_keys import (
    diffusers_to_ldm,
    invert_table,
    ldm_to_diffusers,
    map_key,
    split_ldm,
    unet_table,
    vae_table,
)

UNET_CFG, VAE_CFG = skeleton.sd14_config("unet"), skeleton.sd14_config("vae")

# (LDM key in sd-v1-4.ckpt, diffusers key) — the irregular corners of the layout.
LITERAL_PAIRS = [
    ("model.diffusion_model.time_embed.2.weight", "unet", "time_embedding.linear_2.weight"),
    ("model.diffusion_model.input_blocks.0.0.bias", "unet", "conv_in.bias"),
    ("model.diffusion_model.input_blocks.1.0.in_layers.2.weight", "unet", "down_blocks.0.resnets.0.conv1.weight"),
    ("model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", "unet",
     "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight"),
    ("model.diffusion_model.input_blocks.3.0.op.weight", "unet", "down_blocks.0.downsamplers.0.conv.weight"),
    ("model.diffusion_model.input_blocks.4.0.skip_connection.weight", "unet", "down_blocks.1.resnets.0.conv_shortcut.weight"),
    ("model.diffusion_model.input_blocks.11.0.emb_layers.1.bias", "unet", "down_blocks.3.resnets.1.time_emb_proj.bias"),
    ("model.diffusion_model.middle_block.1.proj_in.weight", "unet", "mid_block.attentions.0.proj_in.weight"),
    ("model.diffusion_model.middle_block.2.out_layers.3.weight", "unet", "mid_block.resnets.1.conv2.weight"),
    ("model.diffusion_model.output_blocks.2.1.conv.weight", "unet", "up_blocks.0.upsamplers.0.conv.weight"),
    ("model.diffusion_model.output_blocks.5.2.conv.bias", "unet", "up_blocks.1.upsamplers.0.conv.bias"),
    ("model.diffusion_model.output_blocks.11.1.proj_out.weight", "unet", "up_blocks.3.attentions.2.proj_out.weight"),
    ("model.diffusion_model.out.0.weight", "unet", "conv_norm_out.weight"),
    ("first_stage_model.encoder.norm_out.bias", "vae", "encoder.conv_norm_out.bias"),
    ("first_stage_model.encoder.down.0.downsample.conv.weight", "vae", "encoder.down_blocks.0.downsamplers.0.conv.weight"),
    ("first_stage_model.encoder.down.1.block.0.nin_shortcut.weight", "vae", "encoder.down_blocks.1.resnets.0.conv_shortcut.weight"),
    ("first_stage_model.decoder.up.3.block.2.norm1.weight", "vae", "decoder.up_blocks.0.resnets.2.norm1.weight"),
    ("first_stage_model.decoder.up.1.upsample.conv.bias", "vae", "decoder.up_blocks.2.upsamplers.0.conv.bias"),
    ("first_stage_model.decoder.mid.attn_1.proj_out.weight", "vae", "decoder.mid_block.attentions.0.to_out.0.weight"),
    ("first_stage_model.encoder.mid.attn_1.norm.bias", "vae", "encoder.mid_block.attentions.0.group_norm.bias"),
    ("first_stage_model.post_quant_conv.weight", "vae", "post_quant_conv.weight"),
    ("cond_stage_model.transformer.text_model.encoder.layers.3.mlp.fc1.weight", "text_encoder",
     "text_model.encoder.layers.3.mlp.fc1.weight"),
]


@pytest.fixture(scope="module")
def meta_full():
    """Full-size SD 1.4 state dicts on the meta device (shapes and names only, no memory)."""
    with torch.device("meta"):
        models = {"unet": skeleton.sd14_unet(), "vae": skeleton.sd14_vae(), "text_encoder": skeleton.sd14_text_encoder()}
    return canonical_state_dicts(models)


@pytest.fixture(scope="module")
def tiny_sds():
    models = {"unet": skeleton.tiny_unet(), "vae": skeleton.tiny_vae(), "text_encoder": skeleton.tiny_text_encoder()}
    return canonical_state_dicts(models)


def canonical_state_dicts(models):
    sds = {name: m.state_dict() for name, m in models.items()}
    sds["text_encoder"] = {canonical_te_path(k): v for k, v in sds["text_encoder"].items()}
    return sds


@pytest.mark.parametrize("ldm_key, component, diffusers_key", LITERAL_PAIRS)
def test_literal_sd14_pairs(meta_full, ldm_key, component, diffusers_key):
    tensor = meta_full[component][diffusers_key]
    ldm = diffusers_to_ldm({**{c: {} for c in meta_full}, component: {diffusers_key: tensor}}, UNET_CFG, VAE_CFG)
    assert list(ldm) == [ldm_key]
    back = ldm_to_diffusers(ldm, UNET_CFG, VAE_CFG)[component]
    assert list(back) == [diffusers_key] and back[diffusers_key].shape == tensor.shape


def test_vae_attention_is_1x1_conv_in_ldm(meta_full):
    ldm = diffusers_to_ldm(meta_full, UNET_CFG, VAE_CFG)
    assert ldm["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (512, 512, 1, 1)
    assert ldm["first_stage_model.encoder.mid.attn_1.q.bias"].shape == (512,)
    assert ldm["first_stage_model.encoder.mid.attn_1.norm.weight"].shape == (512,)


@pytest.mark.parametrize("build_table, config", [(unet_table, UNET_CFG), (vae_table, VAE_CFG)])
def test_tables_are_bijective(build_table, config):
    table = build_table(config)
    inverted = invert_table(table)
    assert len(inverted) == len(table)
    assert invert_table(inverted) == table
    for block in table.values():
        if block.inner is not None:
            assert len(set(block.inner.values())) == len(block.inner)


def test_full_size_round_trip_covers_every_key(meta_full):
    ldm = diffusers_to_ldm(meta_full, UNET_CFG, VAE_CFG)
    assert len(ldm) == sum(len(sd) for sd in meta_full.values())  # 686 + 248 + 196, no collisions
    back = ldm_to_diffusers(ldm, UNET_CFG, VAE_CFG)
    for name, sd in meta_full.items():
        assert list(back[name]) == list(sd)
        assert all(back[name][k].shape == sd[k].shape for k in sd)


def test_round_trip_keeps_tensor_values(tiny_sds):
    back = ldm_to_diffusers(diffusers_to_ldm(tiny_sds, skeleton.TINY_UNET, skeleton.TINY_VAE),
                            skeleton.TINY_UNET, skeleton.TINY_VAE)
    for name, sd in tiny_sds.items():
        assert all(torch.equal(back[name][k], sd[k]) for k in sd)


def test_unknown_key_is_named():
    with pytest.raises(KeyError, match="model.diffusion_model.label_emb.0.0.weight"):
        ldm_to_diffusers({"model.diffusion_model.label_emb.0.0.weight": torch.zeros(1)}, UNET_CFG, VAE_CFG)
    assert map_key("input_blocks.1.0.bogus_layer.weight", unet_table(UNET_CFG)) is None


def test_old_text_encoder_layout_without_text_model():
    ldm = {"cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight": torch.zeros(1)}
    assert list(ldm_to_diffusers(ldm, UNET_CFG, VAE_CFG)["text_encoder"]) == ["text_model.encoder.layers.0.mlp.fc1.weight"]


def test_split_keeps_other_keys_apart():
    parts, other = split_ldm({"betas": torch.zeros(3), "model_ema.decay": torch.zeros(()),
                              "first_stage_model.quant_conv.bias": torch.zeros(8)})
    assert other == ["betas", "model_ema.decay"] and list(parts["vae"]) == ["quant_conv.bias"]


@pytest.mark.parametrize("which", ["meta_full", "tiny_sds"])
def test_matches_diffusers_single_file_converter(request, which):
    sds = request.getfixturevalue(which)
    unet_cfg, vae_cfg = (UNET_CFG, VAE_CFG) if which == "meta_full" else (skeleton.TINY_UNET, skeleton.TINY_VAE)
    ldm = diffusers_to_ldm(sds, unet_cfg, vae_cfg)
    ours = ldm_to_diffusers(ldm, unet_cfg, vae_cfg)
    theirs = {
        "unet": dsf.convert_ldm_unet_checkpoint(dict(ldm), unet_cfg),
        "vae": dsf.convert_ldm_vae_checkpoint(dict(ldm), vae_cfg),
        "text_encoder": dsf.convert_ldm_clip_checkpoint(dict(ldm)),
    }
    for name in ours:
        assert set(ours[name]) == set(theirs[name]), name
        for key, tensor in ours[name].items():
            assert tensor.shape == theirs[name][key].shape, key
            if which == "tiny_sds":
                assert torch.equal(tensor, theirs[name][key]), key
