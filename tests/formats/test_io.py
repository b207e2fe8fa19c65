import hashlib

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats.io import convert_lora_file, load_lora_file, read_safetensors, save_lora_file


@pytest.fixture
def lora(tiny, lora_maker):
    return lora_maker(tiny, ("unet-transformer", "unet-conv"), ranks=(4, 2), dora=True)


def _equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fmt", ["kohya", "diffusers", "native"])
def test_save_then_load_is_exact_in_fp32(fmt, lora, tmp_path):
    path = save_lora_file(tmp_path / f"{fmt}.safetensors", lora, {"note": "hi", "steps": 100}, fmt, torch.float32)
    back, meta, found = load_lora_file(path)
    assert found == fmt and _equal(back, lora)
    assert meta["note"] == "hi" and meta["steps"] == "100"  # metadata is stringified
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_default_dtype_is_fp16_with_fp32_alphas_and_kohya_hash_is_the_data_hash(lora, tmp_path):
    path = save_lora_file(tmp_path / "k.safetensors", lora)
    blob = path.read_bytes()
    header = int.from_bytes(blob[:8], "little")
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["sshs_model_hash"] == hashlib.sha256(blob[8 + header:]).hexdigest()
        dtypes = {k.endswith(".alpha"): f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {False: torch.float16, True: torch.float32}  # alphas stay exact


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
     "conv_in: the module mixes loha and lokr"),
    ({"lora_unet_conv_in.lora_down.weight": torch.zeros(2, 4, 3, 3), "lora_unet_conv_in.lora_up.weight":
      torch.zeros(320, 2, 1, 1), "lora_unet_conv_in.scale": torch.tensor(1.0)}, "lora_unet_conv_in.scale"),
])
def test_unsupported_files_are_refused_whole_with_the_reason(state, message, tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file(state, str(path))
    with pytest.raises(SdloraError, match=message) as err:
        load_lora_file(path)
    assert str(path) in str(err.value)


def _sd14_layers():
    """{(component, canonical path): base weight shape} of SD 1.4 (meta device: no memory)."""
    from sdlora.formats.modules import lora_paths
    from sdlora.models.names import canonical_te_path
    from sdlora.models.skeleton import build_text_encoder, build_unet, sd14_config

    with torch.device("meta"):
        unet, te = build_unet(sd14_config("unet")), build_text_encoder(sd14_config("text_encoder"))
    layers = {("unet", p): tuple(unet.get_submodule(p).weight.shape) for p in lora_paths(unet)}
    layers.update({("text_encoder", canonical_te_path(p)): tuple(te.get_submodule(p).weight.shape)
                   for p in lora_paths(te)})
    return layers


def test_community_style_sd15_locon_file_loads(tmp_path):
    """A full-size kohya LoCon file as shared online: kohya's default 192 UNet + 72 text-encoder modules,
    3x3 convs at another rank, fp16, ss_* metadata, some modules without alpha."""
    from sdlora.lora import resolve_targets

    layers = _sd14_layers()
    unet_paths = [p for c, p in layers if c == "unet"]
    chosen = [("unet", p) for p in resolve_targets(["unet-transformer", "unet-conv"], unet_paths)]
    chosen += [m for m in layers if m[0] == "text_encoder"]
    state = {}
    for i, (component, path) in enumerate(chosen):
        shape = layers[(component, path)]
        rank = 2 if len(shape) == 4 and shape[2:] != (1, 1) else 1  # conv_dim vs network_dim
        name = ("lora_unet_" if component == "unet" else "lora_te_") + path.replace(".", "_")
        state[f"{name}.lora_down.weight"] = torch.zeros((rank, shape[1]) + shape[2:], dtype=torch.float16)
        state[f"{name}.lora_up.weight"] = torch.zeros((shape[0], rank) + (1,) * (len(shape) - 2), dtype=torch.float16)
        if i % 5:
            state[f"{name}.alpha"] = torch.tensor(1.0, dtype=torch.float16)
    path = tmp_path / "community_locon.safetensors"
    save_file(state, str(path), metadata={"ss_network_module": "networks.lora", "ss_network_dim": "1",
                                          "ss_base_model_version": "sd_v1", "ss_network_args": '{"conv_dim": "2"}'})
    lora, meta, fmt = load_lora_file(path)
    assert fmt == "kohya" and set(C.group(lora)) == set(chosen)
    # 22 resnets x (conv1, conv2, time_emb_proj) + 14 conv_shortcuts + 3 down- and 3 upsamplers = 86 LoCon modules
    assert sum(c == "unet" for c, _ in chosen) == 192 + 86 and sum(c == "text_encoder" for c, _ in chosen) == 72
    assert meta["ss_network_dim"] == "1"
