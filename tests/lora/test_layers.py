"""LoRALinear / LoRAConv2d: PEFT parity, invariants, dropout variants, dtypes, bad input."""
import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sdlora.errors import SdloraError
from sdlora.lora import LoRAConv2d, LoRALinear

TOL = 1e-5
KINDS = {
    # name: (base layer factory, input shape)
    "linear": (lambda: nn.Linear(12, 10), (3, 5, 12)),
    "conv1x1": (lambda: nn.Conv2d(6, 10, 1), (2, 6, 5, 5)),
    "conv3x3": (lambda: nn.Conv2d(6, 10, 3, stride=2, padding=1), (2, 6, 7, 7)),
}


def make_layer(kind: str, seed: int = 0, **opts):
    """(wrapper with a randomized adapter 'default', the untouched base copy, input)."""
    torch.manual_seed(seed)
    factory, shape = KINDS[kind]
    base = factory()
    wrapper = (LoRALinear if kind == "linear" else LoRAConv2d)(copy.deepcopy(base))
    ad = wrapper.add_adapter("default", 4, 8, **opts)
    with torch.no_grad():
        ad.up.weight.normal_()
        if ad.dora:
            ad.magnitude.mul_(1 + 0.2 * torch.rand_like(ad.magnitude))
    return wrapper.eval(), base, torch.randn(shape)


def peft_twin(base: nn.Module, wrapper, dora: bool, rslora: bool):
    """The same adapter built by PEFT 0.21 around a copy of `base`, weights copied from ours."""
    from peft import LoraConfig, inject_adapter_in_model

    holder = nn.Module()
    holder.m = copy.deepcopy(base)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=["m"], use_dora=dora,
                                       use_rslora=rslora), holder)
    layer, ad = holder.m, wrapper.adapters["default"]
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(ad.down.weight)
        layer.lora_B["default"].weight.copy_(ad.up.weight)
        if dora:  # PEFT keeps (out,) for Linear and (1, out, 1, 1) for Conv2d
            magnitude = layer.lora_magnitude_vector["default"].weight
            magnitude.copy_(ad.magnitude.view(magnitude.shape))
    return layer.eval()


@pytest.mark.parametrize("kind,dora,rslora", list(itertools.product(KINDS, [False, True], [False, True])))
def test_matches_peft_outputs_and_merged_weights(kind, dora, rslora):
    ours, base, x = make_layer(kind, dora=dora, rslora=rslora)
    peft = peft_twin(base, ours, dora, rslora)
    with torch.no_grad():
        assert (ours(x) - base(x)).abs().max() > 1e-2  # the adapter does something
        assert torch.allclose(ours(x), peft(x), atol=TOL, rtol=0)
        ours.merge()
        peft.merge()
        assert torch.allclose(ours.base.weight, peft.base_layer.weight, atol=TOL, rtol=0)
        assert torch.allclose(ours(x), peft(x), atol=TOL, rtol=0)


@pytest.mark.parametrize("kind,dora", list(itertools.product(KINDS, [False, True])))
def test_gradients_match_peft(kind, dora):
    """Same gradients for down/up/magnitude: in particular the DoRA norm is detached the same way."""
    ours, base, x = make_layer(kind, dora=dora)
    peft = peft_twin(base, ours, dora, False)
    ours.train()(x).square().sum().backward()
    peft.train()(x).square().sum().backward()
    ad = ours.adapters["default"]
    pairs = [(ad.down.weight, peft.lora_A["default"].weight), (ad.up.weight, peft.lora_B["default"].weight)]
    if dora:
        pairs.append((ad.magnitude, peft.lora_magnitude_vector["default"].weight))
    for mine, theirs in pairs:
        assert torch.allclose(mine.grad.view(theirs.grad.shape), theirs.grad, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("kind,rslora", list(itertools.product(KINDS, [False, True])))
def test_delta_weight_matches_peft(kind, rslora):
    ours, base, _ = make_layer(kind, rslora=rslora)
    peft = peft_twin(base, ours, False, rslora)
    assert torch.allclose(ours.delta_weight("default"), peft.get_delta_weight("default"), atol=TOL, rtol=0)


@pytest.mark.parametrize("kind,dora", list(itertools.product(KINDS, [False, True])))
def test_fresh_adapter_is_bitwise_the_base(kind, dora):
    torch.manual_seed(0)
    factory, shape = KINDS[kind]
    base = factory()
    wrapper = (LoRALinear if kind == "linear" else LoRAConv2d)(copy.deepcopy(base))
    wrapper.add_adapter("default", 4, dora=dora)
    x = torch.randn(shape)
    assert torch.equal(wrapper(x), base(x))


@pytest.mark.parametrize("kind,dora", list(itertools.product(KINDS, [False, True])))
def test_merge_then_unmerge_is_identity(kind, dora):
    ours, _, x = make_layer(kind, dora=dora)
    original = ours.base.weight.detach().clone()
    weight_object = ours.base.weight
    with torch.no_grad():
        expected = ours(x)
        ours.merge()
        assert ours.merged and torch.allclose(ours(x), expected, atol=TOL, rtol=0)
        ours.unmerge()
    assert ours.base.weight is weight_object  # same Parameter, updated in place
    rel = (ours.base.weight - original).norm() / original.norm()
    assert rel <= 1e-5
    with torch.no_grad():
        assert torch.allclose(ours(x), expected, atol=TOL, rtol=0)


def test_merge_records_multipliers_so_unmerge_stays_exact():
    ours, _, x = make_layer("linear", dora=True)
    ours.add_adapter("second", 2)
    with torch.no_grad():
        ours.adapters["second"].up.weight.normal_()
    original = ours.base.weight.detach().clone()
    ours.adapters["second"].multiplier = 0.7
    ours.merge()
    ours.adapters["second"].multiplier = 0.2  # changed behind our back while merged
    ours.unmerge()
    assert (ours.base.weight - original).norm() / original.norm() <= 1e-5


def test_merge_twice_and_unmerge_unmerged_are_errors():
    ours, _, _ = make_layer("linear")
    with pytest.raises(SdloraError, match="not merged"):
        ours.unmerge()
    ours.merge()
    with pytest.raises(SdloraError, match="already merged"):
        ours.merge()
    with pytest.raises(SdloraError, match="unmerge first"):
        ours.add_adapter("other", 2)


@pytest.mark.parametrize("dora", [False, True])
def test_two_adapters_add_their_deltas(dora):
    ours, base, x = make_layer("linear", dora=dora)
    second = ours.add_adapter("second", 3, 1.5, dora=dora)
    with torch.no_grad():
        second.up.weight.normal_()
        both = ours(x) - base(x)
        ours.adapters["second"].multiplier = 0.0
        first_only = ours(x) - base(x)
        ours.adapters["second"].multiplier, ours.adapters["default"].multiplier = 1.0, 0.0
        second_only = ours(x) - base(x)
        ours.adapters["default"].multiplier = 1.0
        summed_weight = base.weight + ours.delta_weight("default") + ours.delta_weight("second")
        assert torch.allclose(both, first_only + second_only, atol=TOL, rtol=0)
        assert torch.allclose(ours(x), F.linear(x, summed_weight, base.bias), atol=TOL, rtol=0)


@pytest.mark.parametrize("dora", [False, True])
def test_multiplier_zero_is_the_base_and_scales_the_delta(dora):
    ours, base, x = make_layer("conv3x3", dora=dora)
    with torch.no_grad():
        full = ours(x) - base(x)
        ours.adapters["default"].multiplier = 0.0
        assert torch.equal(ours(x), base(x))
        ours.adapters["default"].multiplier = 0.5
        assert torch.allclose(ours(x) - base(x), 0.5 * full, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind,dora", [("linear", False), ("conv3x3", False), ("linear", True), ("conv1x1", True)])
def test_gradients_reach_only_lora_parameters(kind, dora):
    ours, _, x = make_layer(kind, dora=dora)
    ours.train()
    ours(x).square().mean().backward()
    assert all(p.grad is None and not p.requires_grad for p in ours.base.parameters())
    adapter_params = dict(ours.adapters.named_parameters())
    assert len(adapter_params) == (3 if dora else 2)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter_params.values())


def test_dilated_conv_down_keeps_the_base_geometry():
    base = nn.Conv2d(3, 8, 3, stride=1, padding=2, dilation=2)
    ours = LoRAConv2d(copy.deepcopy(base))
    ad = ours.add_adapter("default", 4)
    assert (ad.down.kernel_size, ad.down.stride, ad.down.padding, ad.down.dilation) == ((3, 3), (1, 1), (2, 2), (2, 2))
    assert ad.up.kernel_size == (1, 1)
    with torch.no_grad():
        ad.up.weight.normal_()
        x = torch.randn(2, 3, 9, 9)
        merged = F.conv2d(x, base.weight + ours.delta_weight("default"), base.bias, padding=2, dilation=2)
        assert torch.allclose(ours(x), merged, atol=TOL, rtol=0)


def identity_adapter(p_input=0.0, p_rank=0.0, p_module=0.0):
    """A LoRALinear on a zero base whose adapter is the identity (down = up = I), in train mode."""
    base = nn.Linear(4, 4, bias=False)
    nn.init.zeros_(base.weight)
    layer = LoRALinear(base)
    ad = layer.add_adapter("default", 4, dropout=p_input, rank_dropout=p_rank, module_dropout=p_module)
    with torch.no_grad():
        ad.down.weight.copy_(torch.eye(4))
        ad.up.weight.copy_(torch.eye(4))
    return layer.train()


def test_dropouts_are_training_only():
    layer = identity_adapter(0.5, 0.5, 0.5).eval()
    x = torch.randn(3, 6, 4)
    assert torch.equal(layer(x), x)


def test_input_dropout_drops_elements():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 4) + 3.0
    y = identity_adapter(p_input=0.5)(x)
    kept = y != 0
    assert torch.allclose(y[kept], 2 * x[kept])
    assert 0.2 < kept.float().mean() < 0.8
    assert not torch.equal(kept, kept[:, :1, :].expand_as(kept))  # per element, not per sample


def test_module_dropout_skips_the_whole_adapter():
    torch.manual_seed(0)
    layer, x = identity_adapter(p_module=0.5), torch.randn(2, 3, 4) + 3.0
    outcomes = {("skip" if torch.equal(y, torch.zeros_like(y)) else "full" if torch.equal(y, x) else "other")
                for y in (layer(x) for _ in range(40))}
    assert outcomes == {"skip", "full"}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_base_keeps_fp32_adapters(dtype):
    torch.manual_seed(0)
    base = nn.Linear(16, 8).to(dtype)
    layer = LoRALinear(base)
    ad = layer.add_adapter("default", 4, dora=True)
    assert ad.down.weight.dtype == ad.up.weight.dtype == ad.magnitude.dtype == torch.float32
    with torch.no_grad():
        ad.up.weight.normal_()
    x = torch.randn(2, 16)
    y = layer(x.to(dtype))
    assert y.dtype == dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(x)
    reference = F.linear(x, base.weight.float() + layer.delta_weight("default"), base.bias.float())
    assert torch.allclose(y.float(), reference, atol=0.05) and torch.allclose(z.float(), reference, atol=0.05)


def test_under_autocast_the_adapter_reads_low_precision_activations_without_an_fp32_copy():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8).to(torch.bfloat16))
    ad = layer.add_adapter("default", 4, alpha=2.0)
    with torch.no_grad():
        ad.up.weight.normal_()
    seen = []
    ad.down.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    x = torch.randn(3, 16)
    layer(x.to(torch.bfloat16))  # no autocast: the adapter runs in its own fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x.to(torch.bfloat16))
    assert seen == [torch.float32, torch.bfloat16]
    y.float().square().sum().backward()
    reference = LoRALinear(nn.Linear(16, 8))
    reference.base.load_state_dict({k: v.float() for k, v in layer.base.state_dict().items()})
    ref_ad = reference.add_adapter("default", 4, alpha=2.0)
    ref_ad.load_state_dict(ad.state_dict())
    ref_y = reference(x)
    ref_y.square().sum().backward()
    assert ad.up.weight.grad.dtype == torch.float32
    torch.testing.assert_close(y.float(), ref_y, atol=0.1, rtol=0.05)
    torch.testing.assert_close(ad.up.weight.grad, ref_ad.up.weight.grad, atol=0.2, rtol=0.05)


def test_autocast_conv_with_dora_and_input_dropout_runs():
    layer = LoRAConv2d(nn.Conv2d(4, 8, 3, padding=1))
    layer.add_adapter("default", 4, dora=True, dropout=0.1, rank_dropout=0.1, module_dropout=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer.train()(torch.randn(2, 4, 6, 6))
    out.float().sum().backward()
    assert layer.adapters["default"].magnitude.grad is not None


def test_wrapper_exposes_the_base_attributes():
    linear, conv = LoRALinear(nn.Linear(5, 7)), LoRAConv2d(nn.Conv2d(3, 6, 3, stride=2, padding=1))
    assert (linear.in_features, linear.out_features, linear.weight.shape) == (5, 7, (7, 5))
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride) == (3, 6, (3, 3), (2, 2))
    assert linear.weight is linear.base.weight and conv.bias is conv.base.bias


@pytest.mark.parametrize("call,message", [
    (lambda l: l.add_adapter("a", 0), "rank must be a positive integer"),
    (lambda l: l.add_adapter("a", 9), "rank 9 is larger than this layer allows \\(8\\)"),
    (lambda l: l.add_adapter("a", 4, use_dora=True), "unknown LoRA option 'use_dora'"),
    (lambda l: l.add_adapter("a.b", 4), "adapter name must be"),
    (lambda l: (l.add_adapter("a", 4), l.add_adapter("a", 4)), "already exists"),
])
def test_bad_adapter_settings_are_clear_errors(call, message):
    with pytest.raises(SdloraError, match=message):
        call(LoRALinear(nn.Linear(8, 16)))


def test_conv_rank_limit_counts_the_kernel_and_grouped_conv_is_refused():
    layer = LoRAConv2d(nn.Conv2d(2, 64, 3))
    layer.add_adapter("ok", 18)  # 2 * 3 * 3 = 18 columns
    with pytest.raises(SdloraError, match="rank 19 is larger"):
        layer.add_adapter("too_big", 19)
    with pytest.raises(SdloraError, match="grouped convolutions"):
        LoRAConv2d(nn.Conv2d(4, 4, 3, groups=2))


def test_compiles_without_graph_breaks():
    layer = LoRALinear(nn.Linear(8, 8))
    layer.add_adapter("default", 4, dora=True, dropout=0.1, rank_dropout=0.1, module_dropout=0.1)
    layer.add_adapter("second", 2)
    compiled = torch.compile(layer, backend="eager", fullgraph=True)  # fullgraph: a break is an error
    compiled.train()(torch.randn(2, 3, 8)).sum().backward()
    assert layer.adapters["default"].magnitude.grad is not None
    x = torch.randn(2, 3, 8)
    assert torch.allclose(compiled.eval()(x), layer(x))
