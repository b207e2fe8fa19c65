"""LoKr: the weight change as a Kronecker product (LyCORIS's "lokr").

    delta W = scale * kron(w1, w2)       w1: (a, c), w2: (b, d[, kh, kw]),  out = a * b, in = c * d

Each dimension is split by `factorization(dim, factor)` (the smaller part goes to w1). w1 is kept
full unless `decompose_both` asks for w1_a @ w1_b; w2 is low rank (w2_a @ w2_b, or a Tucker product
with core t2 for k x k convs with `use_tucker`) unless the rank is at least half its larger side or
`full_matrix` is set, then it is full. scale = alpha / rank, except that with both halves full
there is no rank and scale is 1 (as LyCORIS, ComfyUI and A1111 read it).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from sdlora.lora.factored import FactoredAdapter
from sdlora.lora.keys import LOKR_FACTORS
from sdlora.lora.loha import tucker_product

FACTORS = LOKR_FACTORS


def factorization(dim: int, factor: int = -1) -> tuple[int, int]:
    """Split `dim` into (m, n), m <= n, m * n = dim, as LyCORIS does.

    `factor` > 0 dividing `dim`: (factor, dim // factor) sorted. Otherwise m is the largest divisor
    of `dim` that is at most sqrt(dim) and at most `factor` (no cap with factor -1): the most
    balanced split allowed. 128 -> (8, 16); 320 -> (16, 20); 768 with factor 8 -> (8, 96).
    """
    if factor > 0 and dim % factor == 0:
        return min(factor, dim // factor), max(factor, dim // factor)
    cap = math.isqrt(dim) if factor <= 0 else min(factor, math.isqrt(dim))
    m = max(d for d in range(1, cap + 1) if dim % d == 0)
    return m, dim // m


def kron_weight(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """kron(w1, w2) with w1 (a, c) broadcast over w2's kernel axes: (a * b, c * d[, kh, kw])."""
    w1 = w1.reshape(*w1.shape, *[1] * (w2.dim() - w1.dim()))
    return torch.kron(w1.contiguous(), w2.contiguous())  # kron needs contiguous inputs (einsum outputs may not be)


def lokr_shapes(shape: tuple[int, ...], rank: int, *, factor: int = -1, use_tucker: bool = False,
                decompose_both: bool = False, full_matrix: bool = False) -> dict[str, tuple[int, ...]]:
    """Factor name -> shape for a base weight of `shape` (out, in[, kh, kw]); the same choices as LyCORIS."""
    out, inp, *kernel = shape
    a, b = factorization(out, factor)
    c, d = factorization(inp, factor)
    shapes: dict[str, tuple[int, ...]] = {}
    if decompose_both and rank < max(a, c) / 2 and not full_matrix:
        shapes.update(lokr_w1_a=(a, rank), lokr_w1_b=(rank, c))
    else:
        shapes["lokr_w1"] = (a, c)
    if full_matrix or rank >= max(b, d) / 2:
        shapes["lokr_w2"] = (b, d, *kernel)
    elif use_tucker and any(k != 1 for k in kernel):
        shapes.update(lokr_w2_a=(rank, b), lokr_w2_b=(rank, d), lokr_t2=(rank, rank, *kernel))
    else:
        shapes.update(lokr_w2_a=(b, rank), lokr_w2_b=(rank, d * math.prod(kernel)))
    return shapes


def lokr_weight(shape: tuple[int, ...] | None = None, lokr_w1=None, lokr_w1_a=None, lokr_w1_b=None,
                lokr_w2=None, lokr_w2_a=None, lokr_w2_b=None, lokr_t2=None) -> torch.Tensor:
    """Unscaled LoKr delta W from whichever factors are given: in the base weight's `shape`, or
    flattened to (out, in * kh * kw) when `shape` is None (a file alone does not say the kernel)."""
    w1 = lokr_w1 if lokr_w1 is not None else lokr_w1_a @ lokr_w1_b
    if lokr_w2 is not None:
        w2 = lokr_w2
    elif lokr_t2 is not None:
        w2 = tucker_product(lokr_t2, lokr_w2_a, lokr_w2_b)  # (b, d, kh, kw)
    else:  # (b, d * kh * kw): kron keeps each kernel window inside one input column block
        w2 = lokr_w2_a @ lokr_w2_b
    delta = kron_weight(w1, w2)
    return delta.flatten(1) if shape is None else delta.reshape(shape)


class LoKrAdapter(FactoredAdapter):
    """One named LoKr adapter around a base weight of `shape`.

    Initialised like the reference so that delta W starts at zero: the w2 half that is created
    last (w2, or w2_b) is zero, the others Kaiming-uniform.
    """

    algorithm = "lokr"
    FACTORS = FACTORS

    def __init__(self, shape, rank, alpha=None, *, factor: int = -1, use_tucker: bool = False,
                 decompose_both: bool = False, full_matrix: bool = False, factor_shapes=None,
                 device=None, dtype=torch.float32, **opts):
        super().__init__(shape, rank, alpha, **opts)
        sizes = factor_shapes or lokr_shapes(self.shape, self.rank, factor=factor, use_tucker=use_tucker,
                                             decompose_both=decompose_both, full_matrix=full_matrix)
        self._register(sizes, {"device": device, "dtype": dtype}, given=factor_shapes is not None)
        with torch.no_grad():
            for name, param in self.factors().items():
                nn.init.kaiming_uniform_(param, a=math.sqrt(5))
            nn.init.zeros_(self.lokr_w2 if "lokr_w2" in sizes else self.lokr_w2_b)

    @property
    def full_rank(self) -> bool:
        """Both halves full: there is no rank, and scale is 1 whatever alpha says."""
        return "lokr_w1" in self.factors() and "lokr_w2" in self.factors()

    @property
    def scale(self) -> float:
        return 1.0 if self.full_rank else super().scale

    def factor_weight(self) -> torch.Tensor:
        return lokr_weight(self.shape, **self.factors())
