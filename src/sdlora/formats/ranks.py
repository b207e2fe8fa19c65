"""How many singular values to keep: a fixed rank, or kohya's dynamic rules, as one table.

Each rule maps the singular values sigma (descending) of a weight change and a threshold X to a rank,
exactly as kohya's sd-scripts resize_lora.py does (its index functions plus its `+ 1`):

    sv_ratio       the number of sigma_i > sigma_max / X   (strictly greater)   X >= 1
    sv_fro         the smallest r with sum(sigma[:r]^2) / sum(sigma^2) >= X^2   0 < X <= 1
                   (||fit_r||_F / ||delta||_F >= X: kohya's Frobenius rule)
    sv_cumulative  the smallest r with sum(sigma[:r]) / sum(sigma) >= X         0 < X <= 1
    energy         the smallest r with sum(sigma[:r]^2) / sum(sigma^2) >= X     0 < X <= 1  (sdlora's)

The result is then capped to [1, max_rank] (max_rank: the module's own rank or --rank), and a change
whose largest singular value is at most MIN_SV gets rank 1 whatever the rule (kohya's zero-matrix
rule; kohya measures up @ down, sdlora the scaled change). So sv_ratio X = 1 keeps one rank, and
X = 2 on sigma = (8, 4, 2, 1) keeps one too: 4 is not greater than 8 / 2.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sdlora.errors import SdloraError

# Relative slack so that a fraction that is 1 in exact arithmetic (0.9999999...) still reaches X = 1.
_SLACK = 1e-9
MIN_SV = 1e-6  # kohya's resize_lora: a change with sigma_max <= this is a zero matrix (rank 1)


def _first_reaching(fractions: torch.Tensor, x: float) -> int:
    """The smallest r with fractions[r - 1] >= x (fractions ascending, ending near 1)."""
    return int(torch.searchsorted(fractions.double(), torch.tensor(x - _SLACK, dtype=torch.float64))) + 1


def _sv_ratio(sigma: torch.Tensor, x: float) -> int:
    return int((sigma > sigma[0] / x).sum())


def _sv_fro(sigma: torch.Tensor, x: float) -> int:
    squared = sigma.double().pow(2)
    return _first_reaching(squared.cumsum(0) / squared.sum(), x * x)


def _sv_cumulative(sigma: torch.Tensor, x: float) -> int:
    s = sigma.double()
    return _first_reaching(s.cumsum(0) / s.sum(), x)


def _energy(sigma: torch.Tensor, x: float) -> int:
    squared = sigma.double().pow(2)
    return _first_reaching(squared.cumsum(0) / squared.sum(), x)


# name -> (rule, lowest threshold, highest threshold, whether the lowest is allowed)
RULES: dict[str, tuple[Callable[[torch.Tensor, float], int], float, float, bool]] = {
    "sv_ratio": (_sv_ratio, 1.0, math.inf, True),
    "sv_fro": (_sv_fro, 0.0, 1.0, False),
    "sv_cumulative": (_sv_cumulative, 0.0, 1.0, False),
    "energy": (_energy, 0.0, 1.0, False),
}
DYNAMIC = ("sv_ratio", "sv_fro", "sv_cumulative")  # kohya's --dynamic_method names


def check_rule(method: str, threshold: float | None, flag: str = "--threshold") -> None:
    """SdloraError unless `method` is a known rule and `threshold` is in its range."""
    if method not in RULES:
        raise SdloraError(f"unknown rank rule {method!r}; choose one of {', '.join(RULES)}")
    _, low, high, closed = RULES[method]
    ok = isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and math.isfinite(threshold)
    if not ok or not (low <= threshold if closed else low < threshold) or threshold > high:
        span = f"{'>=' if closed else '>'} {low:g}" + ("" if high == math.inf else f" and <= {high:g}")
        raise SdloraError(f"{flag} for {method} must be a number {span}, got {threshold!r}")


def pick_rank(sigma: torch.Tensor, max_rank: int, method: str | None = None, threshold: float | None = None) -> int:
    """The rank to keep of a change with singular values `sigma` (descending): max_rank without a rule."""
    if sigma.numel() == 0 or float(sigma[0]) <= MIN_SV:
        return 1
    if method is None:
        return max(1, min(max_rank, sigma.numel()))
    rule = RULES[method][0]
    return max(1, min(rule(sigma, float(threshold)), max_rank, sigma.numel()))


def retained(sigma: torch.Tensor, rank: int) -> tuple[float, float]:
    """(kept, total) squared singular values: the energy a rank-`rank` fit keeps."""
    squared = sigma.double().pow(2)
    return float(squared[:rank].sum()), float(squared.sum())
