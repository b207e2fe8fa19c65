"""diffusers/PEFT key tables, alphas via lora_adapter_metadata, and parity with diffusers' loader."""
import json
import math

import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats import apply, canonical as C
from sdlora.formats.diffusers import METADATA_KEY, from_diffusers, to_diffusers
from sdlora.formats.io import load_lora_file, save_lora_file
from sdlora.formats.modules import component_paths
from sdlora.models import build_pipeline, tiny_components

Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
OUT = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"
TE_Q = "text_model.encoder.layers.0.self_attn.q_proj"


def _pair(rank=2, out=320, inp=320):
    return torch.randn(rank, inp), torch.randn(out, rank)


def test_keys_and_metadata(tiny, lora_maker):
    lora = lora_maker(tiny, ("unet-attn",), ranks=(4, 2), alphas=(3.0, 1.5))
    state, meta = to_diffusers(lora, {"ss_seed": "1"})
    assert f"unet.{Q}.lora_A.weight" in state and f"unet.{Q}.lora_B.weight" in state
    assert f"text_encoder.{TE_Q}.lora_A.weight" in state
    assert not any(k.endswith("alpha") for k in state)  # diffusers refuses keys without 'lora'
    config = json.loads(meta[METADATA_KEY])
    assert (config["unet.r"], config["unet.lora_alpha"]) in ((4, 3.0), (2, 1.5), (4, 1.5), (2, 3.0))
    te_targets = config["text_encoder.target_modules"]
    assert "encoder.layers.0.self_attn.q_proj" in te_targets  # suffix-matches transformers 4 and 5
    assert meta["ss_seed"] == "1"


def test_round_trip_is_exact(tiny, lora_maker):
    lora = lora_maker(tiny, ("unet-transformer", "unet-conv"), ranks=(4, 2, 1), alphas=(3.0, 1.5, 0.5), dora=True)
    state, meta = to_diffusers(lora)
    back, _ = from_diffusers(state, meta)
    assert set(back) == set(lora) and all(torch.equal(back[k], lora[k]) for k in lora)


def test_without_metadata_alpha_is_rank():
    down, up = _pair(rank=3)
    lora, _ = from_diffusers({f"unet.{Q}.lora_A.weight": down, f"unet.{Q}.lora_B.weight": up})
    assert float(lora[f"unet.{Q}.alpha"]) == 3.0


def test_rslora_config_becomes_an_equivalent_alpha():
    down, up = _pair(rank=4)
    config = {"unet.r": 4, "unet.lora_alpha": 8, "unet.use_rslora": True}
    lora, _ = from_diffusers({f"unet.{Q}.lora_A.weight": down, f"unet.{Q}.lora_B.weight": up},
                             {METADATA_KEY: json.dumps(config)})
    assert math.isclose(float(lora[f"unet.{Q}.alpha"]) / 4, 8 / math.sqrt(4))


@pytest.mark.parametrize("down_key,up_key,module", [
    (f"unet.{Q}.lora.down.weight", f"unet.{Q}.lora.up.weight", f"unet.{Q}"),
    ("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight",
     "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight", f"unet.{OUT}"),
    ("text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.down.weight",
     "text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.up.weight", f"text_encoder.{TE_Q}"),
    ("text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.down.weight",
     "text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_linear_layer.up.weight",
     "text_encoder.text_model.encoder.layers.0.mlp.fc1"),
])
def test_older_diffusers_spellings_are_read(down_key, up_key, module):
    down, up = _pair()
    lora, _ = from_diffusers({down_key: down, up_key: up})
    assert torch.equal(lora[f"{module}.lora_down.weight"], down) and torch.equal(lora[f"{module}.lora_up.weight"], up)


@pytest.mark.parametrize("key", [f"unet.{Q}.lora_C.weight", "unet.down_blocks.9.attn.lora_A.weight",
                                 f"unet.{Q}.down.weight"])
def test_unknown_keys_are_named(key):
    down, up = _pair()
    with pytest.raises(SdloraError, match="1 key.*" + key.split(".")[1]):
        from_diffusers({f"unet.{Q}.lora_A.weight": down, f"unet.{Q}.lora_B.weight": up, key: down})


@pytest.mark.parametrize("dora", [False, True])
def test_diffusers_export_loads_in_diffusers_with_alphas(dora, tmp_path, probe, tiny, lora_maker, diff):
    # per-module ranks and alphas: the scale only survives through rank_pattern / alpha_pattern
    lora = lora_maker(tiny, ("unet-transformer", "unet-conv"), ranks=(4, 2), alphas=(3.0, 1.5, 0.5), dora=dora)
    apply.attach(tiny, lora)
    ours = probe(tiny.unet, tiny.text_encoder)
    path = save_lora_file(tmp_path / "pytorch_lora_weights.safetensors", lora, {}, "diffusers", torch.float32)
    pipe = build_pipeline(tiny_components(0))
    pipe.load_lora_weights(str(path))
    theirs = probe(pipe.unet, pipe.text_encoder)
    errors = [diff(a, b) for a, b in zip(ours, theirs)]
    print(f"diffusers export (dora={dora}): max |sdlora - diffusers| unet {errors[0]:.2e}, text {errors[1]:.2e}")
    assert max(errors) < 1e-4


def _peft_state(model) -> dict:
    """A PEFT-injected model's LoRA tensors under PEFT's saved names (adapter name dropped)."""
    return {k.replace(".default.", "."): v for k, v in model.state_dict().items() if ".lora_" in k}


def test_file_written_by_diffusers_is_read(tmp_path, probe, tiny, diff):
    """diffusers' own save_lora_weights output (PEFT names + LoraConfig metadata) loads in sdlora."""
    from peft import LoraConfig, inject_adapter_in_model

    reference = tiny_components(0)
    unet_config = LoraConfig(r=4, lora_alpha=2, target_modules=["to_q", "to_v", "proj_in"],
                             rank_pattern={"proj_in": 2}, alpha_pattern={"to_v": 6})
    te_config = LoraConfig(r=2, lora_alpha=5, target_modules=["q_proj", "fc1"])
    inject_adapter_in_model(unet_config, reference.unet)
    inject_adapter_in_model(te_config, reference.text_encoder)
    gen = torch.Generator().manual_seed(1)
    for model in (reference.unet, reference.text_encoder):
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data = torch.randn(param.shape, generator=gen) * 0.2
    theirs = probe(reference.unet, reference.text_encoder)
    te_state = {f"text_model.{k}": v for k, v in _peft_state(reference.text_encoder).items()}  # file form
    type(build_pipeline(reference)).save_lora_weights(
        tmp_path, unet_lora_layers=_peft_state(reference.unet), text_encoder_lora_layers=te_state,
        unet_lora_adapter_metadata=unet_config.to_dict(), text_encoder_lora_adapter_metadata=te_config.to_dict())
    lora, _, fmt = load_lora_file(tmp_path / "pytorch_lora_weights.safetensors",
                                  module_paths=component_paths(tiny.unet, tiny.text_encoder))
    assert fmt == "diffusers"
    assert float(lora[f"unet.{Q}.alpha"]) == 2.0 and C.rank(C.group(lora)[("unet", Q)]) == 4
    assert float(lora["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v.alpha"]) == 6.0
    assert C.rank(C.group(lora)[("unet", "down_blocks.0.attentions.0.proj_in")]) == 2
    assert float(lora[f"text_encoder.{TE_Q}.alpha"]) == 5.0
    apply.attach(tiny, lora)
    errors = [diff(a, b) for a, b in zip(probe(tiny.unet, tiny.text_encoder), theirs)]
    print(f"diffusers-written file: max |sdlora - PEFT| unet {errors[0]:.2e}, text {errors[1]:.2e}")
    assert max(errors) < 1e-4
