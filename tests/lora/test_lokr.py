"""LoKr math: the factor split, factor shapes and delta W against the reference (lycoris-lora)."""
import copy
import itertools

import pytest
import torch
from torch import nn

from sdlora.lora.lokr import LoKrAdapter, factorization, lokr_shapes

lycoris_lokr = pytest.importorskip("lycoris.modules.lokr")
from lycoris.functional.general import factorization as reference_factorization  # noqa: E402

REL = 1e-5
BASES = {
    "linear": lambda: nn.Linear(24, 32),
    "conv1x1": lambda: nn.Conv2d(12, 16, 1),
    "conv3x3": lambda: nn.Conv2d(12, 16, 3, padding=1),
}
# name: (rank, LyCORIS/sdlora options)
VARIANTS = {
    "low-rank-w2": (2, {}),
    "factor-4": (1, {"factor": 4}),
    "decompose-both": (1, {"factor": 8, "decompose_both": True}),
    "tucker": (2, {"use_tucker": True}),
    "full-matrix": (2, {"full_matrix": True}),
    "rank-forces-full": (8, {}),
}
DIMS = [1, 2, 7, 12, 16, 18, 20, 40, 127, 128, 250, 320, 360, 512, 640, 768, 1024, 1280, 2560, 5120]


@pytest.mark.parametrize("factor", [-1, 1, 2, 3, 4, 8, 16, 24, 100])
def test_factorization_matches_lycoris(factor):
    for dim in DIMS:
        assert factorization(dim, factor) == reference_factorization(dim, factor), dim


def reference(kind, rank, alpha, **opts):
    torch.manual_seed(0)
    base = BASES[kind]()
    ref = lycoris_lokr.LokrModule("m", copy.deepcopy(base), 1.0, rank, alpha, **opts)
    with torch.no_grad():
        for name, param in ref.named_parameters():
            if name.startswith("lokr_"):
                param.normal_(0, 0.5)
    return base, ref.eval()


def twin(base, ref, rank, alpha, **opts):
    ours = LoKrAdapter(tuple(base.weight.shape), rank, alpha, **opts)
    with torch.no_grad():
        for name, param in ours.factors().items():
            param.copy_(getattr(ref, name))
    return ours


@pytest.mark.parametrize("kind,variant,rslora", list(itertools.product(BASES, VARIANTS, [False, True])))
def test_delta_weight_matches_lycoris(kind, variant, rslora):
    rank, opts = VARIANTS[variant]
    base, ref = reference(kind, rank, 3.0, rs_lora=rslora, **opts)
    ours = twin(base, ref, rank, 3.0, rslora=rslora, **opts)
    assert set(ours.factors()) == {n for n, _ in ref.named_parameters() if n.startswith("lokr_")}
    with torch.no_grad():
        expected = ref.get_weight(ref.shape)  # the reference's forward path: scale applied once
        got = ours.scale * ours.factor_weight()
    if ours.full_rank and rslora:  # LyCORIS trains this case with scale sqrt(rank), but its files
        expected = expected / ref.scale  # hold no rank: every reader, its own too, applies scale 1
    assert ours.scale == pytest.approx(1.0 if ours.full_rank else ref.scale)
    assert expected.abs().max() > 1e-2
    assert rel_err(got, expected) <= REL


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_both_halves_full_means_scale_one():
    ours = LoKrAdapter((32, 24), 4, 1.0, full_matrix=True)
    assert set(ours.factors()) == {"lokr_w1", "lokr_w2"} and ours.scale == 1.0


@pytest.mark.parametrize("kind", list(BASES))
def test_fresh_adapter_is_zero_and_shapes_follow_the_table(kind):
    shape = tuple(BASES[kind]().weight.shape)
    ours = LoKrAdapter(shape, 2, None, use_tucker=True)
    assert torch.count_nonzero(ours.factor_weight()) == 0
    assert {n: tuple(p.shape) for n, p in ours.factors().items()} == lokr_shapes(shape, 2, use_tucker=True)
    assert ours.factor_weight().shape == shape
