"""One named LoRA adapter: its `down`/`up` pair, rank, alpha, scale, multiplier and dropout settings.

The adapter holds parameters and the low-rank path only; how an adapter changes its layer
(scale, DoRA, merging) lives with the wrappers in sdlora.lora.layers.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from sdlora.errors import SdloraError

INITS = ("kaiming", "gaussian")
ALGORITHMS = ("lora", "loha", "lokr")
# options that only one algorithm understands (the others are common to all)
OWN_OPTIONS = {"lora": ("init",), "loha": ("use_tucker", "factor_shapes"),
               "lokr": ("factor", "use_tucker", "decompose_both", "full_matrix", "factor_shapes")}
MAX_MULTIPLIER = 100.0  # |multiplier| above this only ever renders noise or black images
ADAPTER_OPTIONS = ("algorithm", "rslora", "dora", "dropout", "rank_dropout", "module_dropout", "init", "dtype",
                   "multiplier", "factor", "use_tucker", "decompose_both", "full_matrix", "factor_shapes")


def check_multiplier(value, what: str = "LoRA multiplier") -> float:
    """A multiplier (LoRA weight) as a float: a finite number with |value| <= MAX_MULTIPLIER."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or abs(value) > MAX_MULTIPLIER:
        raise SdloraError(f"{what} must be a finite number between -{MAX_MULTIPLIER:g} and {MAX_MULTIPLIER:g}, "
                          f"got {value!r}")
    return float(value)


def check_options(rank, alpha=None, **opts) -> None:
    """Validate adapter settings before anything is built (raises SdloraError naming the field)."""
    unknown = sorted(set(opts) - set(ADAPTER_OPTIONS))
    if unknown:
        raise SdloraError(f"unknown LoRA option {unknown[0]!r}; known options: {', '.join(ADAPTER_OPTIONS)}")
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise SdloraError(f"rank must be a positive integer, got {rank!r}")
    if alpha is not None and not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise SdloraError(f"alpha must be a positive number (None means alpha = rank), got {alpha!r}")
    for key in ("dropout", "rank_dropout", "module_dropout"):
        p = opts.get(key, 0.0)
        if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
            raise SdloraError(f"{key} must be a probability in [0, 1), got {p!r}")
    if "multiplier" in opts:
        check_multiplier(opts["multiplier"])
    if opts.get("init", "kaiming") not in INITS:
        raise SdloraError(f"init must be one of {INITS}, got {opts['init']!r}")
    _check_algorithm_options(**opts)


def _check_algorithm_options(algorithm: str = "lora", **opts) -> None:
    """The algorithm is known and every algorithm-specific option belongs to it."""
    if algorithm not in ALGORITHMS:
        raise SdloraError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    own = OWN_OPTIONS[algorithm]
    for other, names in OWN_OPTIONS.items():
        foreign = [n for n in names if n in opts and n not in own]
        if foreign:
            raise SdloraError(f"option {foreign[0]!r} applies to {other} adapters, not {algorithm}")
    factor = opts.get("factor", -1)
    if isinstance(factor, bool) or not isinstance(factor, int) or not (factor == -1 or factor >= 1):
        raise SdloraError(f"factor must be -1 (automatic) or a positive integer, got {factor!r}")


class AdapterBase(nn.Module):
    """What every adapter algorithm holds: rank, alpha and their scale, dropouts, the runtime multiplier and
    the DoRA magnitude slot (set by the wrapper)."""

    def __init__(self, rank: int, alpha: float | None = None, *, rslora: bool = False, dropout: float = 0.0,
                 rank_dropout: float = 0.0, module_dropout: float = 0.0, multiplier: float = 1.0):
        super().__init__()
        self.rank = int(rank)
        self.alpha = float(rank if alpha is None else alpha)
        self.rslora = bool(rslora)
        self.dropout, self.rank_dropout, self.module_dropout = dropout, rank_dropout, module_dropout
        self.multiplier = float(multiplier)
        self.register_parameter("magnitude", None)  # DoRA: (out,) row magnitudes, set by the wrapper

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    @property
    def dora(self) -> bool:
        return self.magnitude is not None


class LoRAAdapter(AdapterBase):
    """One named low-rank adapter: `down` (in -> rank) and `up` (rank -> out), plus its settings.

    forward(x) is the un-scaled low-rank path  up(rank_dropout(down(x))); the wrapper owning the
    adapter applies input dropout, scale, DoRA, module dropout and the multiplier.
    """

    def __init__(self, down: nn.Module, up: nn.Module, rank: int, alpha: float | None = None, *,
                 rslora: bool = False, dropout: float = 0.0, rank_dropout: float = 0.0,
                 module_dropout: float = 0.0, init: str = "kaiming", multiplier: float = 1.0):
        super().__init__(rank, alpha, rslora=rslora, dropout=dropout, rank_dropout=rank_dropout,
                         module_dropout=module_dropout, multiplier=multiplier)
        self.down, self.up = down, up
        if init == "kaiming":  # the nn.Linear default, as in microsoft/LoRA and PEFT
            nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        else:
            nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)  # so a fresh adapter leaves the model unchanged

    @property
    def dtype(self) -> torch.dtype:
        return self.down.weight.dtype

    def lora_weight(self) -> torch.Tensor:
        """up @ down flattened: (out, in * kh * kw), unscaled."""
        return self.up.weight.flatten(1) @ self.down.weight.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)  # Linear: (..., rank); Conv2d: (B, rank, H, W)
        if self.training and self.rank_dropout > 0:
            h = h * self._rank_mask(h)
        return self.up(h)

    def _rank_mask(self, h: torch.Tensor) -> torch.Tensor:
        """Per-sample keep mask over the rank axis, rescaled by 1 / (1 - p) (as kohya does)."""
        if isinstance(self.down, nn.Conv2d):  # (B, rank, H, W) -> mask (B, rank, 1, 1)
            shape = h.shape[:-2] + (1, 1)
        else:  # (B, ..., rank) -> mask (B, 1, ..., rank)
            shape = h.shape[:1] + (1,) * (h.dim() - 2) + (self.rank,) if h.dim() > 1 else h.shape
        keep = torch.rand(shape, device=h.device) >= self.rank_dropout
        return keep.to(h.dtype) / (1.0 - self.rank_dropout)

    def extra_repr(self) -> str:
        flags = "".join(f", {k}" for k in ("rslora", "dora") if getattr(self, k))
        return f"rank={self.rank}, alpha={self.alpha:g}, multiplier={self.multiplier:g}{flags}"
