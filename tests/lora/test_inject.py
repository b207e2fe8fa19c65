"""inject / remove / overrides / stacking / multipliers / merging a whole model."""
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sdlora.errors import SdloraError
from sdlora.lora import (
    LoRAConv2d,
    LoRALinear,
    adapter_names,
    inject,
    lora_modules,
    merge_lora,
    multiplier,
    remove,
    set_multiplier,
    unmerge_lora,
)

TOL = 1e-5
ATTN = [r"blocks\.\d+\.(to_q|to_k|to_v|to_out\.0)"]
# every Linear/Conv2d of TinyNet: conv_in, proj, six Linears in each of two blocks, conv_out
ALL_TARGETS = [r"conv_in", r"proj", r"blocks\.\d+\.(to_q|to_k|to_v|to_out\.0|ff\.0|ff\.2)", r"conv_out"]
N_ALL = 15


def snapshot(model):
    return ({n: id(m) for n, m in model.named_modules()},
            {k: v.clone() for k, v in model.state_dict().items()},
            {n: p.requires_grad for n, p in model.named_parameters()})


def test_inject_wraps_matching_layers_with_isinstance_dispatch(tiny_net):
    wrapped = inject(tiny_net, ALL_TARGETS, rank=2)
    assert sorted(wrapped) == sorted(lora_modules(tiny_net))
    assert len(wrapped) == N_ALL
    assert isinstance(tiny_net.conv_in, LoRAConv2d) and isinstance(tiny_net.blocks[0].to_out[0], LoRALinear)
    assert isinstance(tiny_net.norm, torch.nn.LayerNorm)  # not Linear/Conv2d: left alone


def test_exact_path_matches_itself_only(tiny_net):
    wrapped = inject(tiny_net, ["blocks.1.to_q"], rank=2)
    assert list(wrapped) == ["blocks.1.to_q"]


def test_remove_restores_the_module_tree_exactly(tiny_net, tiny_input, randomize):
    tiny_net.blocks[0].to_q.weight.requires_grad_(False)  # a flag that must survive
    modules, state, grads = snapshot(tiny_net)
    expected = tiny_net(tiny_input)
    inject(tiny_net, ALL_TARGETS, rank=2, dora=True)
    inject(tiny_net, ATTN, rank=3, adapter="second")
    randomize(tiny_net)
    merge_lora(tiny_net)  # remove() must unmerge as well
    assert len(remove(tiny_net)) == N_ALL
    assert snapshot(tiny_net)[0] == modules and snapshot(tiny_net)[2] == grads
    after = tiny_net.state_dict()
    assert list(after) == list(state)
    assert all(torch.allclose(after[k], state[k], atol=1e-6, rtol=1e-5) for k in state)
    assert torch.allclose(tiny_net(tiny_input), expected, atol=TOL)


def test_untouched_model_state_is_bitwise_after_remove(tiny_net):
    _, state, _ = snapshot(tiny_net)
    inject(tiny_net, ATTN, rank=2)
    remove(tiny_net)
    assert all(torch.equal(tiny_net.state_dict()[k], v) for k, v in state.items())


def test_fresh_injection_is_bitwise_the_base_model(tiny_net, tiny_input):
    # Compare against the frozen base: torch's matmul folds batch dims differently when a weight
    # requires grad, which changes the last bit; injection freezes the base layers.
    tiny_net.requires_grad_(False)
    expected = tiny_net(tiny_input)
    inject(tiny_net, ALL_TARGETS, rank=2)
    assert torch.equal(tiny_net(tiny_input), expected)


def test_second_adapter_joins_the_existing_wrapper(tiny_net):
    first = inject(tiny_net, ATTN, rank=2, adapter="style")
    second = inject(tiny_net, [r"blocks\.0\.to_q", r"conv_in"], rank=4, adapter="subject")
    assert second["blocks.0.to_q"] is first["blocks.0.to_q"]
    assert set(first["blocks.0.to_q"].adapters) == {"style", "subject"}
    assert adapter_names(tiny_net) == {"style", "subject"}
    assert sorted(remove(tiny_net, "subject")) == ["blocks.0.to_q", "conv_in"]
    assert isinstance(tiny_net.conv_in, torch.nn.Conv2d) and not isinstance(tiny_net.conv_in, LoRAConv2d)
    assert set(tiny_net.blocks[0].to_q.adapters) == {"style"}
    with pytest.raises(SdloraError, match="no LoRA adapter named 'subject'"):
        remove(tiny_net, "subject")


def test_stacked_adapters_sum_and_multipliers(tiny_net, tiny_input, randomize):
    base = tiny_net.requires_grad_(False)(tiny_input)  # frozen, as injection leaves it (see above)
    inject(tiny_net, ATTN, rank=2, adapter="a")
    inject(tiny_net, [r"blocks\.\d+\.to_v"], rank=3, adapter="b")
    randomize(tiny_net)
    both = tiny_net(tiny_input)
    assert set_multiplier(tiny_net, "b", 0) == 2
    only_a = tiny_net(tiny_input)
    set_multiplier(tiny_net, "a", 0)
    assert torch.equal(tiny_net(tiny_input), base)
    set_multiplier(tiny_net, "b", 1)
    only_b = tiny_net(tiny_input)
    assert not torch.allclose(both, only_a) and not torch.allclose(both, only_b)
    # a single layer's deltas add exactly (the network mixes them non-linearly, so test one layer)
    layer, x = tiny_net.blocks[0].to_v, torch.randn(2, 3, 8)
    with torch.no_grad():
        set_multiplier(tiny_net, "a", 1)
        layer_both = layer(x) - layer.base(x)
        set_multiplier(tiny_net, "b", 0)
        layer_a = layer(x) - layer.base(x)
        set_multiplier(tiny_net, "a", 0), set_multiplier(tiny_net, "b", 1)
        layer_b = layer(x) - layer.base(x)
    assert torch.allclose(layer_both, layer_a + layer_b, atol=TOL)
    with pytest.raises(SdloraError, match="no LoRA adapter named 'c'"):
        set_multiplier(tiny_net, "c", 1)
    with pytest.raises(SdloraError, match="multiplier must be a finite number between -100 and 100, got 'strong'"):
        set_multiplier(tiny_net, "a", "strong")


def test_merge_whole_model_matches_and_unmerges(tiny_net, tiny_input, randomize):
    _, state, _ = snapshot(tiny_net)
    inject(tiny_net, ALL_TARGETS, rank=2, dora=True)
    inject(tiny_net, ATTN, rank=2, adapter="extra", multiplier=0.5)
    randomize(tiny_net)
    with torch.no_grad():
        expected = tiny_net(tiny_input)
        assert merge_lora(tiny_net) == N_ALL
        assert torch.allclose(tiny_net(tiny_input), expected, atol=TOL)
        with pytest.raises(SdloraError, match="already merged"):
            merge_lora(tiny_net)
        with pytest.raises(SdloraError, match="unmerge first"):
            set_multiplier(tiny_net, "extra", 1.0)
        assert unmerge_lora(tiny_net) == N_ALL
        assert torch.allclose(tiny_net(tiny_input), expected, atol=TOL)
    base_weights = {k.replace(".base.", "."): v for k, v in tiny_net.state_dict().items() if ".adapters." not in k}
    for key, original in state.items():
        assert (base_weights[key] - original).norm() <= 1e-5 * original.norm()


def test_overrides_set_per_module_rank_alpha_and_options(tiny_net):
    wrapped = inject(tiny_net, ATTN + ["conv_in"], rank=4, alpha=4, overrides={
        r"blocks\.1\..*": {"rank": 2},
        r"blocks\.1\.to_v": {"alpha": 1, "dora": True},  # later entries win, settings merge
        r"conv_in": {"rank": 0},  # rank 0: leave out
    })
    assert "conv_in" not in wrapped and not isinstance(tiny_net.conv_in, LoRAConv2d)
    ranks = {p: (w.adapters["default"].rank, w.adapters["default"].alpha, w.adapters["default"].dora)
             for p, w in wrapped.items()}
    assert ranks["blocks.0.to_q"] == (4, 4.0, False)
    assert ranks["blocks.1.to_q"] == (2, 4.0, False)
    assert ranks["blocks.1.to_v"] == (2, 1.0, True)


def test_checkpointing_recomputes_the_same_graph(tiny_net, tiny_input, randomize):
    inject(tiny_net, ALL_TARGETS, rank=2, dora=True, rank_dropout=0.3, dropout=0.2)
    randomize(tiny_net)
    tiny_net.train()
    torch.manual_seed(3)
    tiny_net(tiny_input).square().mean().backward()
    plain = [p.grad.clone() for p in tiny_net.parameters() if p.requires_grad]
    tiny_net.zero_grad()
    torch.manual_seed(3)
    checkpoint(tiny_net, tiny_input, use_reentrant=False).square().mean().backward()
    checked = [p.grad for p in tiny_net.parameters() if p.requires_grad]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checked))


@pytest.mark.parametrize("targets,kwargs,message", [
    ("unet-atn", {}, "unknown preset 'unet-atn'"),
    ("text-encoder", {}, "preset 'text-encoder' matches no Linear/Conv2d module"),
    ([r"blocks\.\d+\.to_query"], {}, r"pattern 'blocks\\\\.\\\\d\+\\\\.to_query' matches no"),
    ([], {}, "targets is empty"),
    (["blocks.(0"], {}, "not a valid regular expression"),
    (ATTN, {"rank": 0}, "rank must be a positive integer"),
    (ATTN, {"rank": 9}, "blocks.0.to_q: rank 9 is larger than this layer allows"),
    (ATTN, {"overrides": {"nothing": {"rank": 2}}}, "override 'nothing' matches none"),
    (ATTN, {"overrides": {".*": {"ranks": 2}}}, "unknown key 'ranks'"),
    (ATTN, {"use_dora": True}, "unknown LoRA option 'use_dora'"),
])
def test_bad_injection_is_a_clear_error_and_changes_nothing(tiny_net, targets, kwargs, message):
    modules, state, grads = snapshot(tiny_net)
    with pytest.raises(SdloraError, match=message):
        inject(tiny_net, targets, **kwargs)
    assert snapshot(tiny_net)[0] == modules and snapshot(tiny_net)[2] == grads
    assert not lora_modules(tiny_net)


def test_failure_midway_rolls_back_new_and_existing_wrappers(tiny_net):
    inject(tiny_net, [r"blocks\.0\.to_q"], rank=2, adapter="keep")
    modules, _, grads = snapshot(tiny_net)
    with pytest.raises(SdloraError, match="blocks.1.ff.0: rank 12 is larger"):
        inject(tiny_net, [r"blocks\.\d+\.(to_q|ff\.0)"], rank=4, adapter="new",
               overrides={r"blocks\.1\.ff\.0": {"rank": 12}})  # ff.0 is 8 -> 16: max rank 8
    assert snapshot(tiny_net)[0] == modules and snapshot(tiny_net)[2] == grads
    assert adapter_names(tiny_net) == {"keep"}
    with pytest.raises(SdloraError, match="already exists"):
        inject(tiny_net, [r"blocks\.0\.to_q"], rank=2, adapter="keep")
    assert adapter_names(tiny_net) == {"keep"}  # the failed duplicate did not remove the original


def test_root_module_cannot_be_a_target():
    with pytest.raises(SdloraError, match="matches no"):
        inject(torch.nn.Sequential(torch.nn.Linear(4, 4)), [""], rank=2)


def test_multiplier_context_restores_each_layers_previous_value(tiny_net, tiny_input, randomize):
    inject(tiny_net, ATTN, rank=2, adapter="a")
    randomize(tiny_net)
    set_multiplier(tiny_net, "a", 0.5)
    half = tiny_net(tiny_input)
    with multiplier([tiny_net, nn.Linear(2, 2)], "a", 0.0):  # models without the adapter are left alone
        assert all(w.adapters["a"].multiplier == 0.0 for w in lora_modules(tiny_net).values())
    assert all(w.adapters["a"].multiplier == 0.5 for w in lora_modules(tiny_net).values())  # not 1.0
    assert torch.equal(tiny_net(tiny_input), half)
    with pytest.raises(RuntimeError):
        with multiplier([tiny_net], "a", 2.0):
            raise RuntimeError("sampling failed")
    assert all(w.adapters["a"].multiplier == 0.5 for w in lora_modules(tiny_net).values())
