"""LoRA key suffixes and the alpha rule: the one place every reader and writer of LoRA weights asks.

A LoRA weight's key is `<module path>.<suffix>`; PARAMS is the table of suffixes, each with the
network type it belongs to (`shared` ones, alpha and DoRA magnitude, go with any type). Other
adapter types (LoHa, LoKr...) add their suffixes here and everything that splits keys follows.

The alpha rule, as kohya and A1111 read files: a missing alpha or an alpha of 0 means alpha = rank
(scale 1); a negative or non-finite alpha is an error. Every floor reads alphas through alpha_value().
"""
from __future__ import annotations

import math

import torch

from sdlora.errors import SdloraError

DOWN, UP, ALPHA, DORA = "lora_down.weight", "lora_up.weight", "alpha", "dora_scale"
# LyCORIS's factor names (sdlora.lora.loha, sdlora.lora.lokr), in file order
LOHA_FACTORS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR_FACTORS = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")

# suffix -> the network type it belongs to ("shared": any type)
PARAMS: dict[str, str] = {
    DOWN: "lora",
    UP: "lora",
    **{name: "loha" for name in LOHA_FACTORS},
    **{name: "lokr" for name in LOKR_FACTORS},
    ALPHA: "shared",
    DORA: "shared",
}
SUFFIXES: tuple[str, ...] = tuple(PARAMS)
# factor suffix -> algorithm, for the types whose weight change is built from factors
FACTOR_SUFFIXES: dict[str, str] = {s: kind for s, kind in PARAMS.items() if kind in ("loha", "lokr")}
# the longest first, so that a suffix that ends another (".weight") never shadows it
LONGEST_FIRST: tuple[str, ...] = tuple(sorted(PARAMS, key=len, reverse=True))
DOTTED: tuple[str, ...] = tuple("." + s for s in SUFFIXES)  # for str.endswith


def split_key(key: str) -> tuple[str, str]:
    """'a.b.lora_up.weight' -> ('a.b', 'lora_up.weight'); SdloraError for a key with no known suffix."""
    for suffix in LONGEST_FIRST:
        if key.endswith("." + suffix) and len(key) > len(suffix) + 1:
            return key[: -len(suffix) - 1], suffix
    raise SdloraError(f"{key!r} is not a LoRA key (expected '<module path>.' + one of {', '.join(SUFFIXES)})")


def alpha_value(value: torch.Tensor | float | None, rank: int, where: str = "LoRA") -> float:
    """The alpha a stored value means: None or 0 -> rank (kohya/A1111); raises for < 0, NaN, inf, rank < 1."""
    if int(rank) < 1:
        raise SdloraError(f"{where}: rank {int(rank)} (lora_down has no rows); the file is broken, re-export it")
    if value is None:
        return float(rank)
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise SdloraError(f"{where}: alpha must be a single number, got shape {tuple(value.shape)}")
        value = value.item()
    alpha = float(value)
    if not math.isfinite(alpha) or alpha < 0:
        raise SdloraError(f"{where}: alpha {alpha:g} is not a positive number; fix or re-export the LoRA")
    return float(rank) if alpha == 0 else alpha
