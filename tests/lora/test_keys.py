"""sdlora.lora.keys: the key suffix table and the one alpha rule."""
import math

import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.lora.keys import LONGEST_FIRST, PARAMS, alpha_value, split_key


@pytest.mark.parametrize("suffix", list(PARAMS))
def test_split_key_round_trips_every_suffix(suffix):
    assert split_key(f"down_blocks.0.attn1.to_q.{suffix}") == ("down_blocks.0.attn1.to_q", suffix)


def test_longest_suffix_wins_over_one_it_ends():
    assert all(len(a) >= len(b) for a, b in zip(LONGEST_FIRST, LONGEST_FIRST[1:]))


@pytest.mark.parametrize("key", ["to_q.weight", "lora_up.weight", ".alpha", "to_q.lora_mid.weight"])
def test_split_key_refuses_non_lora_keys(key):
    with pytest.raises(SdloraError, match="is not a LoRA key"):
        split_key(key)


@pytest.mark.parametrize("stored, rank, expected", [
    (None, 4, 4.0), (0.0, 4, 4.0), (torch.tensor(0.0), 8, 8.0), (torch.tensor(2.0), 4, 2.0), (1.5, 4, 1.5),
])  # fmt: skip
def test_missing_or_zero_alpha_means_rank(stored, rank, expected):
    assert alpha_value(stored, rank) == expected


@pytest.mark.parametrize("stored, rank, message", [
    (-1.0, 4, "alpha -1 is not a positive number"), (math.nan, 4, "alpha nan"), (math.inf, 4, "alpha inf"),
    (torch.ones(2), 4, "alpha must be a single number"), (1.0, 0, "rank 0"),
])  # fmt: skip
def test_bad_alphas_and_rank_zero_are_errors_naming_the_module(stored, rank, message):
    with pytest.raises(SdloraError, match=f"^mid.to_q: {message}"):
        alpha_value(stored, rank, "mid.to_q")
