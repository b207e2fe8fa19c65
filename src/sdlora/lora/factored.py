"""What LoHa and LoKr adapters share: settings, scale, and the weight-space forward path.

A LoRA adapter runs its low-rank path on the activations (`up(down(x))`). LoHa and LoKr build
their weight change  delta W  from factors instead (a Hadamard or Kronecker product), so their
forward is the base operation applied with  delta W  (`train_weight()`), and the wrapper in
sdlora.lora.layers merges, unmerges and normalises DoRA through `lora_weight()` (unscaled, flattened
to (out, in * kh * kw)) exactly as for LoRA, so every formula stays in its one place (`c * W + d`).

Rank dropout follows the reference (LyCORIS): during training it zeroes whole output rows of
delta W, each with probability `rank_dropout`, without rescaling.
"""
from __future__ import annotations

import torch
from torch import nn

from sdlora.errors import SdloraError
from sdlora.lora.adapter import AdapterBase


class FactoredAdapter(AdapterBase):
    """Base of the adapters whose weight change is built from factor tensors (LoHa, LoKr).

    Subclasses register their factor parameters (named as in the files: `hada_w1_a`, `lokr_w1`, ...)
    and implement `factor_weight()`; `shape` is the base weight's shape (out, in[, kh, kw]).
    """

    algorithm = ""
    FACTORS: tuple[str, ...] = ()  # every factor name the algorithm may use, in file order

    def __init__(self, shape: tuple[int, ...], rank: int, alpha: float | None = None, *,
                 rslora: bool = False, dropout: float = 0.0, rank_dropout: float = 0.0,
                 module_dropout: float = 0.0, multiplier: float = 1.0):
        super().__init__(rank, alpha, rslora=rslora, dropout=dropout, rank_dropout=rank_dropout,
                         module_dropout=module_dropout, multiplier=multiplier)
        self.shape = tuple(int(s) for s in shape)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.factors().values())).dtype

    def factors(self) -> dict[str, torch.Tensor]:
        """name -> parameter for the factors this adapter holds (file names, file order)."""
        return {name: getattr(self, name) for name in self.FACTORS if getattr(self, name, None) is not None}

    def factor_weight(self) -> torch.Tensor:
        """delta W before scaling, in the base weight's shape."""
        raise NotImplementedError

    def _register(self, sizes: dict[str, tuple[int, ...]], factory: dict, given: bool) -> None:
        """Create the factor parameters; `given` sizes (read off a file) must build this base's shape."""
        unknown = sorted(set(sizes) - set(self.FACTORS))
        if unknown:
            raise SdloraError(f"{unknown[0]!r} is not a {self.algorithm} factor (known: {', '.join(self.FACTORS)})")
        for name, size in sizes.items():
            setattr(self, name, nn.Parameter(torch.zeros(*size, **factory)))
        if given:
            try:
                built = tuple(self.factor_weight().shape)
            except (RuntimeError, TypeError, AttributeError) as err:
                raise SdloraError(f"{self.algorithm} factor shapes {sizes} do not fit a weight of shape "
                                  f"{self.shape}: {err}") from None
            if built != self.shape:
                raise SdloraError(f"{self.algorithm} factors build a {built} weight, the layer has {self.shape}")

    def lora_weight(self) -> torch.Tensor:
        """delta W before scaling, flattened to (out, in * kh * kw) like LoRAAdapter.lora_weight()."""
        return self.factor_weight().reshape(self.shape[0], -1)

    def train_weight(self) -> torch.Tensor:
        """delta W (unscaled, base weight shape) as the forward uses it: rank dropout masks rows in training."""
        weight = self.factor_weight()
        if self.training and self.rank_dropout > 0:
            keep = torch.rand(self.shape[0], device=weight.device) >= self.rank_dropout  # (out,)
            weight = weight * keep.to(weight.dtype).view(-1, *[1] * (weight.dim() - 1))
        return weight

    def extra_repr(self) -> str:
        flags = "".join(f", {k}" for k in ("rslora", "dora") if getattr(self, k))
        return (f"{self.algorithm}, shape={self.shape}, rank={self.rank}, alpha={self.alpha:g}, "
                f"scale={self.scale:g}, multiplier={self.multiplier:g}{flags}")
