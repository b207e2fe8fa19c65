import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats.detect import detect_format, lycoris_types, other_base, refuse_unsupported

Z = torch.zeros(1)


@pytest.mark.parametrize("keys,metadata,fmt", [
    (["lora_unet_conv_in.lora_down.weight", "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha"], {}, "kohya"),
    (["unet.conv_in.lora_A.weight", "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_B.weight"], {}, "diffusers"),
    (["unet.conv_in.lora.down.weight"], {}, "diffusers"),
    (["unet.conv_in.lora_down.weight", "text_encoder.text_model.x.alpha"], {}, "native"),
    (["conv_in.lora_down.weight"], {"sdlora_format": "native/1"}, "native"),
])
def test_detect_format(keys, metadata, fmt):
    assert detect_format({k: Z for k in keys}, metadata) == fmt


@pytest.mark.parametrize("keys", [[], ["model.diffusion_model.x.weight"], ["lora_unet_x.alpha", "unet.x.lora_A.weight"]])
def test_detect_format_refuses_other_layouts(keys):
    with pytest.raises(SdloraError):
        detect_format({k: Z for k in keys})


@pytest.mark.parametrize("state,metadata,base", [
    ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha": Z}, {}, "SDXL"),
    ({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.alpha": Z}, {}, "SDXL"),
    ({"text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight": Z}, {}, "SDXL"),
    ({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": Z}, {}, "SD 3 / Flux"),
    ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 1024)},
     {}, "SD 2.x"),
    ({"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(4, 1024)}, {}, "SD 2.x"),
    ({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.lora_A.weight": torch.zeros(4, 2048)},
     {}, "SDXL"),
    ({"lora_unet_conv_in.alpha": Z}, {"ss_base_model_version": "sdxl_base_v1-0"}, "SDXL"),
    ({"lora_unet_conv_in.alpha": Z}, {"ss_v2": "True"}, "SD 2.x"),
    ({"lora_unet_conv_in.alpha": Z}, {"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}, "SDXL"),
])
def test_other_base_is_recognised(state, metadata, base):
    assert other_base(state, metadata)[0] == base
    with pytest.raises(SdloraError, match=f"for {base}, not SD 1.x"):
        refuse_unsupported(state, metadata, "x.safetensors")


@pytest.mark.parametrize("state,metadata", [
    ({"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 768)},
     {"ss_base_model_version": "sd_v1", "ss_v2": "False"}),
    ({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": torch.zeros(4, 32)}, {}),
])
def test_sd1_files_are_not_refused(state, metadata):
    assert other_base(state, metadata) is None
    refuse_unsupported(state, metadata, "x")


def test_lycoris_types_are_named():
    keys = ["lora_unet_conv_in.hada_w1_a", "lora_unet_conv_in.hada_w2_b", "lora_te_x.lokr_w1",
            "lora_unet_y.lora_mid.weight", "lora_unet_y.lora_down.weight"]
    found = lycoris_types(keys)  # LoHa and LoKr are read since sdlora has them (sdlora.lora.loha, .lokr)
    assert found == {"LoCon with Tucker decomposition (lora_mid)": "lora_unet_y.lora_mid.weight"}
    with pytest.raises(SdloraError, match=r"LyCORIS-only.*lora_mid.*lora_unet_y.*LoHa \(hada_\*\) and LoKr"):
        refuse_unsupported({k: Z for k in keys}, {}, "x")
    refuse_unsupported({k: Z for k in keys if "lora_mid" not in k}, {}, "x")
