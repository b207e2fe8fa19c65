import pytest
from torch import nn

from sdlora.errors import SdloraError
from sdlora.formats.modules import component_paths, flat_name, flat_table, lora_paths, sd14_paths
from sdlora.lora import inject
from sdlora.models import tiny_components

# kohya names whose underscores are partly separators and partly inside module names.
KOHYA_NAMES = {
    "down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj":
        "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj",
    "up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0":
        "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_out.0",
    "mid_block_resnets_1_time_emb_proj": "mid_block.resnets.1.time_emb_proj",
    "down_blocks_1_resnets_0_conv_shortcut": "down_blocks.1.resnets.0.conv_shortcut",
    "up_blocks_2_upsamplers_0_conv": "up_blocks.2.upsamplers.0.conv",
    "time_embedding_linear_1": "time_embedding.linear_1",
    "conv_in": "conv_in",
}
TE_NAMES = {
    "text_model_encoder_layers_11_self_attn_out_proj": "text_model.encoder.layers.11.self_attn.out_proj",
    "text_model_encoder_layers_0_mlp_fc1": "text_model.encoder.layers.0.mlp.fc1",
}


def test_sd14_tables_resolve_kohya_names_and_back():
    unet = flat_table(sd14_paths()["unet"])
    te = flat_table(sd14_paths()["text_encoder"])
    for table, names in ((unet, KOHYA_NAMES), (te, TE_NAMES)):
        for flat, dotted in names.items():
            assert table[flat] == dotted
            assert flat_name(dotted) == flat


def test_sd14_tables_have_sd14_counts():
    paths = sd14_paths()
    assert len(paths["text_encoder"]) == 72  # 12 layers x (q, k, v, out, fc1, fc2)
    assert all(p.startswith("text_model.encoder.layers.") for p in paths["text_encoder"])
    assert len(paths["unet"]) == len(set(paths["unet"])) == len(flat_table(paths["unet"]))


def test_tiny_model_names_a_subset_of_sd14():
    tiny = tiny_components(0)
    paths = component_paths(tiny.unet, tiny.text_encoder)
    for component in ("unet", "text_encoder"):
        assert set(paths[component]) <= set(sd14_paths()[component])


def test_two_paths_flattening_alike_are_refused():
    with pytest.raises(SdloraError, match="same kohya name"):
        flat_table(["a.b_c", "a_b.c"])


def test_lora_paths_see_wrappers_as_the_module_they_wrap():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Conv2d(2, 2, 3)))
    before = lora_paths(model)
    inject(model, [r"0", r"2\.0"], rank=2)
    assert before == ["0", "2.0"] and lora_paths(model) == before
