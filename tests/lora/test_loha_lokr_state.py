"""LoHa / LoKr adapters as flat state dicts: keys, round trips (mixed with LoRA), plans, broken dicts."""
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.lora import inject, inject_from_state_dict, lora_modules, lora_plan, lora_state_dict

# LoRA everywhere, LoHa on block 0 (Tucker on no conv there), LoKr with Tucker core on the 3x3 conv_in
OVERRIDES = {r"blocks\.0\..*": {"algorithm": "loha"},
             r"conv_in": {"algorithm": "lokr", "use_tucker": True, "rank": 1, "dora": True},
             r"conv_out": {"algorithm": "loha", "use_tucker": True, "rank": 2}}


def randomized(net):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for wrapper in lora_modules(net).values():
            for p in wrapper.adapters.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return net


def test_mixed_state_dict_round_trips(make_net, tiny_input):
    net = make_net(0)
    inject(net, [r"conv_in", r"conv_out", r"proj", r"blocks\.\d\.to_q"], 2, 1.0, overrides=OVERRIDES)
    randomized(net)
    sd = lora_state_dict(net)
    assert {"conv_in.lokr_t2", "conv_in.lokr_w1", "conv_in.dora_scale", "conv_out.hada_t1",
            "blocks.0.to_q.hada_w2_b", "blocks.1.to_q.lora_up.weight"} <= set(sd)
    plan = lora_plan(sd)
    assert {p: s.get("algorithm", "lora") for p, s in plan.items()} == {
        "conv_in": "lokr", "conv_out": "loha", "proj": "lora", "blocks.0.to_q": "loha", "blocks.1.to_q": "lora"}
    assert plan["conv_in"]["dora"] and plan["conv_out"]["rank"] == 2 and plan["conv_in"]["alpha"] == 1.0

    other = make_net(0)
    inject_from_state_dict(other, sd)
    with torch.no_grad():
        assert (net(tiny_input) - make_net(0)(tiny_input)).abs().max() > 1e-3  # the adapters act
        assert torch.allclose(other(tiny_input), net(tiny_input), atol=1e-6)
    assert {k: v.shape for k, v in lora_state_dict(other).items()} == {k: v.shape for k, v in sd.items()}


def test_broken_factored_dicts_name_the_module(make_net):
    net = make_net(0)
    inject(net, [r"blocks\.0\.to_q"], 2, algorithm="loha")
    sd = lora_state_dict(net)
    mixed = {**sd, "blocks.0.to_q.lora_up.weight": torch.zeros(8, 2)}
    with pytest.raises(SdloraError, match="blocks.0.to_q: the module mixes loha and lora"):
        lora_plan(mixed)
    bad = {**sd, "blocks.0.to_q.hada_w1_a": torch.zeros(5, 2)}
    with pytest.raises(SdloraError, match="blocks.0.to_q.*do not fit"):
        inject_from_state_dict(make_net(0), bad)
