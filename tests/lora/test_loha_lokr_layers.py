"""LoHa / LoKr in the LoRA wrappers: reference parity (outputs, DoRA), merge/unmerge, autocast, dropout, bad input."""
import copy
import itertools

import pytest
import torch
from torch import nn

from sdlora.errors import SdloraError
from sdlora.lora import LoRAConv2d, LoRALinear

lycoris_modules = pytest.importorskip("lycoris.modules")

REL = 1e-5
KINDS = {
    "linear": (lambda: nn.Linear(24, 32), (3, 5, 24)),
    "conv3x3": (lambda: nn.Conv2d(12, 16, 3, stride=2, padding=1), (2, 12, 7, 7)),
}
# name: (our options, LyCORIS class name and its options)
ALGOS = {
    "loha": ({"algorithm": "loha"}, ("LohaModule", {})),
    "loha-tucker": ({"algorithm": "loha", "use_tucker": True}, ("LohaModule", {"use_tucker": True})),
    "lokr": ({"algorithm": "lokr", "factor": 4}, ("LokrModule", {"factor": 4})),
    "lokr-tucker": ({"algorithm": "lokr", "use_tucker": True}, ("LokrModule", {"use_tucker": True})),
    "lokr-full": ({"algorithm": "lokr", "full_matrix": True}, ("LokrModule", {"full_matrix": True})),
}


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def wrap(base):
    return (LoRALinear if isinstance(base, nn.Linear) else LoRAConv2d)(base)


def pair(kind, algo, dora=False):
    """(our wrapper, LyCORIS module, input) sharing base weights and random factor tensors."""
    torch.manual_seed(0)
    factory, shape = KINDS[kind]
    base = factory()
    ours_opts, (ref_cls, ref_opts) = ALGOS[algo]
    ref = getattr(lycoris_modules, ref_cls)("m", copy.deepcopy(base), 1.0, 2, 3.0, weight_decompose=dora,
                                            **ref_opts)
    wrapper = wrap(base)
    ad = wrapper.add_adapter("default", 2, 3.0, dora=dora, **ours_opts)
    with torch.no_grad():
        for name, param in ad.factors().items():
            param.copy_(getattr(ref, name).normal_(0, 0.5))
        if dora:
            ref.dora_scale.mul_(1 + 0.3 * torch.rand_like(ref.dora_scale))
            ad.magnitude.copy_(ref.dora_scale.view(-1))
    ref.apply_to()
    return wrapper.eval(), ref.eval(), torch.randn(shape)


@pytest.mark.parametrize("kind,algo,dora", list(itertools.product(KINDS, ALGOS, [False, True])))
def test_outputs_and_delta_weight_match_lycoris(kind, algo, dora):
    ours, ref, x = pair(kind, algo, dora)
    base_weight = ours.base.weight.detach()
    with torch.no_grad():
        expected_delta = ref.get_weight(ref.shape)
        if dora:  # the reference's weight decomposition of W + delta W, minus W
            expected_delta = ref.apply_weight_decompose(base_weight + expected_delta) - base_weight
        assert rel_err(ours.delta_weight("default"), expected_delta) <= REL
        expected = ref(x)
        assert (expected - ours.base(x)).abs().max() > 1e-2  # the adapter does something
        assert rel_err(ours(x), expected) <= REL


@pytest.mark.parametrize("kind", list(KINDS))
def test_stacked_merge_unmerge_are_exact_inverses(kind):
    torch.manual_seed(1)
    factory, shape = KINDS[kind]
    layer = wrap(factory())
    for name, opts in (("a", {"algorithm": "loha", "dora": True}), ("b", {"algorithm": "lokr", "factor": 4}),
                       ("c", {"algorithm": "lora"})):
        ad = layer.add_adapter(name, 2, 1.0, **opts)
        with torch.no_grad():
            for p in ad.parameters():
                p.add_(0.3 * torch.randn_like(p))
    layer.adapters["b"].multiplier = -0.7
    layer.eval()
    x = torch.randn(shape)
    before, weight = layer(x), layer.base.weight.detach().clone()
    layer.merge()
    assert torch.allclose(layer(x), before, atol=1e-5)
    layer.unmerge()
    assert torch.allclose(layer.base.weight, weight, atol=1e-6)
    assert torch.allclose(layer(x), before, atol=1e-6)


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_fresh_adapter_is_the_base_model_and_trains(algo):
    factory, shape = KINDS["conv3x3"]
    layer = wrap(factory())
    ad = layer.add_adapter("default", 2, None, algorithm=algo, use_tucker=True)
    x = torch.randn(shape)
    assert torch.equal(layer(x), layer.base(x))
    layer(x).square().mean().backward()
    grads = [p.grad for p in ad.parameters()]
    assert any(g is not None and g.abs().max() > 0 for g in grads)  # the zero half gets a gradient
    assert layer.base.weight.grad is None


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_autocast_keeps_fp32_adapters_and_follows_fp32(algo):
    torch.manual_seed(2)
    factory, shape = KINDS["linear"]
    layer = wrap(factory())
    ad = layer.add_adapter("default", 2, None, algorithm=algo)
    with torch.no_grad():
        for p in ad.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(shape)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16 and all(p.dtype == torch.float32 for p in ad.parameters())
    assert rel_err(y.float(), layer(x)) < 2e-2


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_rank_and_module_dropout_act_in_training_only(algo):
    torch.manual_seed(3)
    factory, shape = KINDS["linear"]
    layer = wrap(factory())
    ad = layer.add_adapter("default", 2, None, algorithm=algo, rank_dropout=0.5)
    with torch.no_grad():
        for p in ad.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(shape)
    layer.eval()
    full = layer(x) - layer.base(x)
    layer.train()
    dropped = layer(x) - layer.base(x)
    zero_cols = (dropped.abs().amax(dim=(0, 1)) == 0)  # rows of delta W dropped = output channels off
    assert 0 < int(zero_cols.sum()) < 32
    assert torch.allclose(dropped[..., ~zero_cols], full[..., ~zero_cols], atol=1e-6)  # no rescaling
    ad.rank_dropout, ad.module_dropout = 0.0, 0.999
    assert torch.equal(layer(x), layer.base(x))


@pytest.mark.parametrize("opts,match", [
    ({"algorithm": "dora"}, "algorithm must be one of"),
    ({"algorithm": "lokr", "factor": 0}, "factor must be -1"),
    ({"algorithm": "lora", "use_tucker": True}, "applies to loha"),
    ({"algorithm": "loha", "init": "gaussian"}, "applies to lora"),
    ({"algorithm": "loha", "factor": 4}, "applies to lokr"),
    ({"algorithm": "lokr", "factor_shapes": {"lokr_w1": (4, 4), "lokr_w2": (8, 8)}}, "do not fit"),
    ({"algorithm": "loha", "factor_shapes": {"hada_w1_a": (32, 2)}}, "do not fit"),
    ({"algorithm": "loha", "factor_shapes": {"lora_up": (32, 2)}}, "not a loha factor"),
])
def test_bad_options_raise_sdlora_error(opts, match):
    with pytest.raises(SdloraError, match=match):
        wrap(nn.Linear(24, 32)).add_adapter("default", 2, **opts)
