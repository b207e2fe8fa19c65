"""ranks: a threshold gives the rank kohya's resize_lora gives, on singular values where the index
math's off-by-ones matter (ties at the threshold, X = 1, the floor of one rank, the zero change).

The reference is each rule's definition evaluated in exact rational arithmetic over a plain list;
every sigma and threshold below is a binary fraction, so float64 sees the same ties.
"""
from fractions import Fraction

import pytest
import torch

from sdlora.formats.ranks import MIN_SV, pick_rank


def reference(method: str, sigma: list[float], x: float, cap: int) -> int:
    s = [Fraction(v) for v in sigma]
    x = Fraction(x)
    if s[0] <= Fraction(MIN_SV):
        return 1  # a zero change keeps one rank
    if method is None:
        r = cap
    elif method == "sv_ratio":
        r = sum(1 for v in s if v > s[0] / x)  # kept: strictly above sigma_max / X
    else:
        values = [v * v for v in s] if method in ("sv_fro", "energy") else s
        target = x * x if method == "sv_fro" else x
        r = next(n for n in range(1, len(s) + 1) if sum(values[:n]) >= target * sum(values))
    return max(1, min(r, cap, len(s)))


def non_strict_ratio(sigma: list[float], x: float) -> int:
    """The rule as sdlora had it before (sigma_i >= sigma_max / X): one rank more at a tie."""
    return max(1, sum(1 for v in sigma if v >= sigma[0] / x))


HALVING = [8.0, 4.0, 2.0, 1.0]
EVEN = [1.0, 1.0, 1.0, 1.0]  # cumulative fractions 1/4, 1/2, 3/4, 1
FRO = [2.0, 1.0, 1.0, 1.0, 1.0]  # squared fractions 4/8, 5/8, 6/8, 7/8, 1
TABLE = [  # (method, sigma, X, cap, kohya's rank)
    ("sv_ratio", HALVING, 2.0, 8, 1),  # 4 == 8/2 is not kept
    ("sv_ratio", HALVING, 4.0, 8, 2),
    ("sv_ratio", HALVING, 8.0, 8, 3),
    ("sv_ratio", HALVING, 9.0, 8, 4),
    ("sv_ratio", HALVING, 1.0, 8, 1),  # nothing is above sigma_max: the floor of one
    ("sv_ratio", [8.0, 8.0, 1.0], 1.0, 8, 1),  # a tie at the top
    ("sv_ratio", HALVING, 9.0, 2, 2),  # the cap
    ("sv_cumulative", EVEN, 0.5, 8, 2),  # reached exactly at 2
    ("sv_cumulative", EVEN, 0.25, 8, 1),
    ("sv_cumulative", EVEN, 0.75, 8, 3),
    ("sv_cumulative", EVEN, 1.0, 8, 4),
    ("sv_cumulative", EVEN, 0.5 + 2**-20, 8, 3),  # just past a tie: one more
    ("sv_fro", FRO, 0.75, 8, 2),  # X^2 = 9/16 lies between 1/2 and 5/8
    ("sv_fro", FRO, 0.5, 8, 1),  # X^2 = 1/4 <= 1/2
    ("sv_fro", EVEN, 0.5, 8, 1),  # X^2 = 1/4, reached exactly at 1
    ("sv_fro", FRO, 1.0, 3, 3),
    ("energy", FRO, 0.75, 8, 3),  # 6/8 reached exactly at 3
    (None, HALVING, 1.0, 3, 3),
    (None, [MIN_SV, MIN_SV / 2], 1.0, 4, 1),  # kohya's zero matrix: at most MIN_SV
    ("sv_cumulative", [MIN_SV, MIN_SV], 0.9, 4, 1),
]  # fmt: skip


@pytest.mark.parametrize("method, sigma, x, cap, want", TABLE)
def test_a_threshold_gives_kohyas_rank(method, sigma, x, cap, want):
    assert reference(method, sigma, x, cap) == want  # the table agrees with the definition
    for dtype in (torch.float32, torch.float64):  # resize and extract hand over float64, others may not
        assert pick_rank(torch.tensor(sigma, dtype=dtype), cap, method, x) == want


def test_the_table_holds_the_off_by_ones():
    ties = [(s, x) for m, s, x, _, _ in TABLE if m == "sv_ratio" and non_strict_ratio(s, x) != reference(m, s, x, 8)]
    assert len(ties) >= 3  # the strict rule differs from >= at every tie
    assert pick_rank(torch.tensor([2 * MIN_SV]), 4) == 1 and pick_rank(torch.tensor([4 * MIN_SV, MIN_SV]), 4) == 2
