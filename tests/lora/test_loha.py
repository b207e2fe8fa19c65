"""LoHa math: factor shapes and delta W against the reference implementation (lycoris-lora)."""
import copy
import itertools

import pytest
import torch
from torch import nn

from sdlora.lora.loha import LoHaAdapter, loha_shapes

lycoris_loha = pytest.importorskip("lycoris.modules.loha")

REL = 1e-5
BASES = {
    "linear": lambda: nn.Linear(24, 20),
    "conv1x1": lambda: nn.Conv2d(12, 16, 1),
    "conv3x3": lambda: nn.Conv2d(12, 16, 3, padding=1),
}


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def reference(kind, rank, alpha, **opts):
    """A LyCORIS LohaModule around a fresh base layer, every factor random (so delta W is not zero)."""
    torch.manual_seed(0)
    base = BASES[kind]()
    ref = lycoris_loha.LohaModule("m", copy.deepcopy(base), 1.0, rank, alpha, **opts)
    with torch.no_grad():
        for name, param in ref.named_parameters():
            if name.startswith("hada_"):
                param.normal_(0, 0.5)
    return base, ref.eval()


def twin(base, ref, rank, alpha, **opts):
    """Our adapter with the reference's factor tensors copied in (names are the file names)."""
    ours = LoHaAdapter(tuple(base.weight.shape), rank, alpha, **opts)
    with torch.no_grad():
        for name, param in ours.factors().items():
            param.copy_(getattr(ref, name))
    return ours


@pytest.mark.parametrize("kind,tucker,rslora", list(itertools.product(BASES, [False, True], [False, True])))
def test_delta_weight_matches_lycoris(kind, tucker, rslora):
    base, ref = reference(kind, 4, 3.0, use_tucker=tucker, rs_lora=rslora)
    ours = twin(base, ref, 4, 3.0, use_tucker=tucker, rslora=rslora)
    assert set(ours.factors()) == {n for n, _ in ref.named_parameters() if n.startswith("hada_")}
    assert ours.tucker == (tucker and kind == "conv3x3")
    with torch.no_grad():
        expected = ref.get_weight(ref.shape)  # the reference's forward path: scale applied once
        got = ours.scale * ours.factor_weight()
    assert expected.abs().max() > 1e-2
    assert rel_err(got, expected) <= REL


@pytest.mark.parametrize("kind", list(BASES))
def test_fresh_adapter_is_zero_and_shapes_follow_the_table(kind):
    base = BASES[kind]()
    ours = LoHaAdapter(tuple(base.weight.shape), 4, None, use_tucker=True)
    assert torch.count_nonzero(ours.factor_weight()) == 0
    for name, param in ours.factors().items():
        assert tuple(param.shape) == loha_shapes(tuple(base.weight.shape), 4, True)[name]
        assert param.dtype == torch.float32
    assert ours.lora_weight().shape == (base.weight.shape[0], base.weight[0].numel())
