"""The network type of one module in a canonical LoRA dict (LoRA, LoHa, LoKr) and what depends on it.

A module's parameters say its type: `lora_down.weight`/`lora_up.weight` (LoRA, LoCon), `hada_*`
(LoHa) or `lokr_*` (LoKr), plus the shared `alpha` and `dora_scale`. The suffix table and the
per-module reading (type, rank) live in sdlora.lora.state; the math in sdlora.lora.loha / .lokr.
This module adds the file-level checks and the weight change without a model at hand: LoHa / LoKr
factors of a conv may be stored flattened, so their delta W is given as (out, in * kh * kw).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from sdlora.errors import SdloraError
from sdlora.lora.loha import loha_weight
from sdlora.lora.lokr import lokr_weight
from sdlora.lora.keys import FACTOR_SUFFIXES
from sdlora.lora.state import factored_rank, module_algorithm

LABELS = {"lora": "LoRA", "loha": "LoHa", "lokr": "LoKr"}
# per algorithm: groups of parameters of which each must be present (one of the alternatives)
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    "lora": (("lora_down.weight",), ("lora_up.weight",)),
    "loha": (("hada_w1_a",), ("hada_w1_b",), ("hada_w2_a",), ("hada_w2_b",)),
    "lokr": (("lokr_w1", "lokr_w1_a"), ("lokr_w2", "lokr_w2_a")),
}


def algorithm(params: Mapping[str, torch.Tensor], where: str = "LoRA module") -> str:
    return module_algorithm(dict(params), where)


def is_factored(params: Mapping[str, torch.Tensor]) -> bool:
    return any(name in FACTOR_SUFFIXES for name in params)


def check_complete(params: Mapping[str, torch.Tensor], where: str) -> str:
    """The module's algorithm; SdloraError naming the first missing parameter."""
    algo = algorithm(params, where)
    for options in REQUIRED[algo]:
        if not any(name in params for name in options):
            raise SdloraError(f"{LABELS[algo]} module {where} has no {' or '.join(options)}; the file is incomplete")
    return algo


def rank(params: Mapping[str, torch.Tensor]) -> int:
    algo = algorithm(params)
    if algo == "lora":
        return int(params["lora_down.weight"].shape[0])
    return factored_rank(dict(params), algo)


def factored_delta(params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Unscaled delta W of a LoHa / LoKr module, fp32, (out, in * kh * kw)."""
    factors = {k: v.float() for k, v in params.items() if k in FACTOR_SUFFIXES}
    if algorithm(params) == "loha":
        order = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
        return loha_weight(*(factors.get(n) for n in order)).flatten(1)
    return lokr_weight(None, **factors)


def full_rank_lokr(params: Mapping[str, torch.Tensor]) -> bool:
    """A LoKr module with both halves full: no rank, scale 1 whatever alpha says."""
    return "lokr_w1" in params and "lokr_w2" in params


def check_factored(params: Mapping[str, torch.Tensor], where: str) -> int:
    """The factors build a weight change (SdloraError otherwise); returns its output size."""
    try:
        out = int(factored_delta(params).shape[0])
    except (RuntimeError, TypeError) as err:
        raise SdloraError(f"{LABELS[algorithm(params)]} module {where}: its factor shapes do not fit together "
                          f"({', '.join(f'{k} {tuple(v.shape)}' for k, v in params.items())}): {err}") from None
    dora = params.get("dora_scale")
    if dora is not None and (dora.numel() != out or dora.shape[0] != out):
        raise SdloraError(f"module {where}: dora_scale has shape {tuple(dora.shape)}, expected one magnitude per "
                          f"output channel ({out}); DoRA decomposed on the input axis is not supported")
    return out
