"""LoHa: the weight change as a Hadamard product of two low-rank products (FedPara, LyCORIS's "loha").

    delta W = scale * (w1_a @ w1_b) * (w2_a @ w2_b)          (elementwise product)

w1_a, w2_a: (out, rank); w1_b, w2_b: (rank, in * kh * kw). The rank of delta W reaches rank**2
for the parameters of a rank-`rank` LoRA with two pairs. With the Tucker core (3x3 convs,
`use_tucker`) each half is a Tucker product instead:

    half[o, i, h, w] = sum_{p, q} t[p, q, h, w] * a[p, o] * b[q, i]

with t: (rank, rank, kh, kw), a: (rank, out), b: (rank, in) (the layout the files hold).
scale = alpha / rank (alpha / sqrt(rank) with rslora).
"""
from __future__ import annotations

import torch
from torch import nn

from sdlora.lora.factored import FactoredAdapter
from sdlora.lora.keys import LOHA_FACTORS

FACTORS = LOHA_FACTORS


def tucker_product(t: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(rank, rank, *k), (rank, out), (rank, in) -> (out, in, *k)."""
    return torch.einsum("pq...,po,qi->oi...", t, a, b)


def loha_weight(w1_a, w1_b, w2_a, w2_b, t1=None, t2=None) -> torch.Tensor:
    """Unscaled LoHa delta W: (out, in * k) without cores, (out, in, *k) with them."""
    if t1 is not None:
        return tucker_product(t1, w1_a, w1_b) * tucker_product(t2, w2_a, w2_b)
    return (w1_a @ w1_b) * (w2_a @ w2_b)


def loha_shapes(shape: tuple[int, ...], rank: int, use_tucker: bool = False) -> dict[str, tuple[int, ...]]:
    """Factor name -> shape for a base weight of `shape` (out, in[, kh, kw])."""
    out, inp, *kernel = shape
    if use_tucker and any(k != 1 for k in kernel):
        core = (rank, rank, *kernel)
        return {"hada_w1_a": (rank, out), "hada_w1_b": (rank, inp), "hada_w2_a": (rank, out),
                "hada_w2_b": (rank, inp), "hada_t1": core, "hada_t2": core}
    flat_in = inp * int(torch.tensor(kernel).prod()) if kernel else inp
    return {"hada_w1_a": (out, rank), "hada_w1_b": (rank, flat_in),
            "hada_w2_a": (out, rank), "hada_w2_b": (rank, flat_in)}


class LoHaAdapter(FactoredAdapter):
    """One named LoHa adapter around a base weight of `shape`.

    Initialised like the reference so that delta W starts at zero: w*_b ~ N(0, 1), w1_a ~ N(0, 0.1),
    cores ~ N(0, 0.1), w2_a = 0.
    """

    algorithm = "loha"
    FACTORS = FACTORS

    def __init__(self, shape, rank, alpha=None, *, use_tucker: bool = False, factor_shapes=None,
                 device=None, dtype=torch.float32, **opts):
        super().__init__(shape, rank, alpha, **opts)
        sizes = factor_shapes or loha_shapes(self.shape, self.rank, use_tucker)
        self._register(sizes, {"device": device, "dtype": dtype}, given=factor_shapes is not None)
        self.tucker = "hada_t1" in sizes
        with torch.no_grad():
            for name in ("hada_t1", "hada_t2", "hada_w1_a"):
                if hasattr(self, name):
                    nn.init.normal_(getattr(self, name), std=0.1)
            nn.init.normal_(self.hada_w1_b, std=1.0)
            nn.init.normal_(self.hada_w2_b, std=1.0)
            nn.init.zeros_(self.hada_w2_a)

    def factor_weight(self) -> torch.Tensor:
        weight = loha_weight(*self.factors().values())
        return weight.reshape(self.shape)
