"""lora_state_dict / strict loading / inject_from_state_dict / trainability helpers."""
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.lora import (
    count_trainable,
    inject,
    inject_from_state_dict,
    load_lora_state_dict,
    lora_modules,
    lora_plan,
    lora_state_dict,
    mark_only_lora_trainable,
)
from sdlora.lora.state import split_key
from sdlora.models.skeleton import tiny_text_encoder

ATTN = [r"blocks\.\d+\.(to_q|to_k|to_v|to_out\.0)"]
MIXED = ATTN + ["conv_in", "proj"]  # Linear, 3x3 conv, 1x1 conv


def trained(make_net, randomize, seed=0, **opts):
    net = make_net(seed)
    inject(net, MIXED, rank=4, alpha=2, overrides={"conv_in": {"rank": 2, "alpha": 1}}, **opts)
    return randomize(net, seed=seed + 10)


@pytest.mark.parametrize("key,expected", [
    ("blocks.0.to_q.lora_down.weight", ("blocks.0.to_q", "lora_down.weight")),
    ("a.lora_up.weight", ("a", "lora_up.weight")),
    ("x.to_out.0.alpha", ("x.to_out.0", "alpha")),
    ("x.dora_scale", ("x", "dora_scale")),
])
def test_split_key(key, expected):
    assert split_key(key) == expected


def test_state_dict_keys_shapes_and_alpha(make_net, randomize):
    sd = lora_state_dict(trained(make_net, randomize, dora=True))
    assert sd["blocks.0.to_q.lora_down.weight"].shape == (4, 8)
    assert sd["blocks.0.to_q.lora_up.weight"].shape == (8, 4)
    assert sd["conv_in.lora_down.weight"].shape == (2, 4, 3, 3)
    assert sd["conv_in.lora_up.weight"].shape == (8, 2, 1, 1)
    assert sd["conv_in.alpha"].dim() == 0 and sd["conv_in.alpha"].item() == 1.0
    assert sd["proj.alpha"].item() == 2.0
    assert sd["blocks.1.to_v.dora_scale"].shape == (8, 1)
    assert sd["conv_in.dora_scale"].shape == (8, 1, 1, 1)
    assert len(sd) == 10 * 4  # 10 modules x (down, up, alpha, dora_scale)
    assert all(t.dtype == torch.float32 and not t.requires_grad for t in sd.values())


@pytest.mark.parametrize("dora", [False, True])
def test_save_into_a_fresh_model_reproduces_outputs(make_net, randomize, tiny_input, dora):
    source = trained(make_net, randomize, dora=dora)
    target = make_net(0)
    inject(target, MIXED, rank=4, alpha=7, overrides={"conv_in": {"rank": 2}}, dora=dora)
    load_lora_state_dict(target, lora_state_dict(source))
    assert torch.allclose(target(tiny_input), source(tiny_input), atol=1e-6)
    assert target.conv_in.adapters["default"].alpha == 1.0  # alpha comes from the file


@pytest.mark.parametrize("dora", [False, True])
def test_inject_from_state_dict_recovers_ranks_alphas_and_dora(make_net, randomize, tiny_input, dora):
    source = trained(make_net, randomize, dora=dora)
    sd = lora_state_dict(source)
    plan = lora_plan(sd)
    assert plan["conv_in"] == {"rank": 2, "alpha": 1.0, "dora": dora}
    target = make_net(0)
    wrapped = inject_from_state_dict(target, sd, adapter="loaded")
    assert sorted(wrapped) == sorted(lora_modules(source))
    assert torch.allclose(target(tiny_input), source(tiny_input), atol=1e-6)


def test_missing_or_zero_alpha_means_alpha_equals_rank(make_net, randomize):
    sd = {k: v for k, v in lora_state_dict(trained(make_net, randomize)).items() if not k.endswith(".alpha")}
    sd["proj.alpha"] = torch.tensor(0.0)  # kohya reads alpha 0 as "no scaling"
    target = make_net(0)
    inject_from_state_dict(target, sd)
    assert target.conv_in.adapters["default"].alpha == 2.0 and target.proj.adapters["default"].alpha == 4.0
    assert target.blocks[0].to_q.adapters["default"].scale == 1.0
    sd["proj.alpha"] = torch.tensor(-1.0)
    sd["proj.lora_up.weight"] = torch.ones_like(sd["proj.lora_up.weight"])
    before = weights(target)
    with pytest.raises(SdloraError, match=r"proj\.alpha: alpha -1 is not a positive number"):
        load_lora_state_dict(target, sd)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing written


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("edit,message", [
    (lambda sd: sd.pop("blocks.1.to_k.lora_up.weight"), "1 missing keys \\(first: 'blocks.1.to_k.lora_up.weight'\\)"),
    (lambda sd: sd.update({"blocks.0.ff.0.lora_up.weight": torch.zeros(16, 4)}),
     "1 unexpected keys \\(first: 'blocks.0.ff.0.lora_up.weight'\\)"),
    (lambda sd: sd.update({"proj.lora_down.weight": torch.zeros(4, 8, 3, 3)}),
     "shape mismatch for 'proj.lora_down.weight': file has \\(4, 8, 3, 3\\), model expects \\(4, 8, 1, 1\\)"),
    (lambda sd: sd.update({"blocks.0.to_q.dora_scale": torch.ones(8, 1)}), "unexpected keys"),
])
def test_mismatched_state_dict_is_refused_without_partial_load(make_net, randomize, edit, message):
    sd = lora_state_dict(trained(make_net, randomize))
    edit(sd)
    target = make_net(0)
    inject(target, MIXED, rank=4, overrides={"conv_in": {"rank": 2}})
    before = weights(target)
    with pytest.raises(SdloraError, match=message):
        load_lora_state_dict(target, sd)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_loading_for_another_architecture_names_the_module(make_net, randomize):
    sd = lora_state_dict(trained(make_net, randomize))
    text_encoder = tiny_text_encoder()
    before = weights(text_encoder)
    with pytest.raises(SdloraError, match="10 of 10 module paths are not Linear/Conv2d modules of this model "
                                          "\\(first: 'conv_in'\\); was this made for another model"):
        inject_from_state_dict(text_encoder, sd)
    assert not lora_modules(text_encoder) and list(weights(text_encoder)) == list(before)
    inject(text_encoder, "text-encoder", rank=4)
    with pytest.raises(SdloraError, match="missing keys \\(first: 'encoder.layers.0.self_attn.k_proj.lora_down"):
        load_lora_state_dict(text_encoder, sd)


def test_load_errors_without_adapter_and_while_merged(make_net, randomize):
    source = trained(make_net, randomize)
    sd = lora_state_dict(source)
    with pytest.raises(SdloraError, match="no LoRA adapter named 'default'"):
        load_lora_state_dict(make_net(0), sd)
    with pytest.raises(SdloraError, match="no LoRA adapter named 'other'"):
        lora_state_dict(source, "other")
    for wrapper in lora_modules(source).values():
        wrapper.merge()
    with pytest.raises(SdloraError, match="unmerge first"):
        load_lora_state_dict(source, sd)


def test_bad_keys_in_inject_from_state_dict(make_net):
    with pytest.raises(SdloraError, match="'conv_in.weight' is not a LoRA key"):
        inject_from_state_dict(make_net(0), {"conv_in.weight": torch.zeros(1)})
    with pytest.raises(SdloraError, match="no conv_in.lora_up.weight"):
        inject_from_state_dict(make_net(0), {"conv_in.lora_down.weight": torch.zeros(2, 4, 3, 3)})


def test_failed_load_after_injection_is_rolled_back(make_net, randomize):
    sd = lora_state_dict(trained(make_net, randomize))
    sd["proj.lora_down.weight"] = torch.zeros(4, 8, 3, 3)  # a 3x3 LoRA for a 1x1 conv
    target = make_net(0)
    with pytest.raises(SdloraError, match="shape mismatch for 'proj.lora_down.weight'"):
        inject_from_state_dict(target, sd)
    assert not lora_modules(target)


def test_mark_only_lora_trainable_and_count(make_net):
    net = make_net(0)
    total = count_trainable(net)
    inject(net, ATTN, rank=2, adapter="a")
    inject(net, ["conv_in"], rank=2, adapter="b", dora=True)
    a_params = 8 * 2 * (8 + 8)  # 8 Linears 8 -> 8, rank 2
    b_params = 2 * (4 * 9 + 8) + 8  # 3x3 conv 4 -> 8 plus the magnitude
    assert count_trainable(net) == a_params + b_params + total - sum(
        w.base.weight.numel() + w.base.bias.numel() for w in lora_modules(net).values())
    net.requires_grad_(True)
    assert mark_only_lora_trainable(net) == a_params + b_params == count_trainable(net)
    assert mark_only_lora_trainable(net, adapter="b") == b_params
    assert not any(p.requires_grad for n, p in net.named_parameters() if ".adapters.b." not in n)
