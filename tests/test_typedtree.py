"""The generic typed-tree machinery: declared rules in words and in force, TOML round trip."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from sdlora.errors import SdloraError
from sdlora.typedtree import from_dict, leaves, opt, rule_text, to_toml


@dataclass
class Inner:
    n: int = opt(1, "a count", ge=1, le=10)


@dataclass
class Tree:
    x: float = opt(0.5, "a fraction", ge=0.0, lt=1.0)
    pair: list[float] = opt([1.0, 2.0], "two numbers", gt=0.0, le=5.0, length=(2, 2))
    name: str = opt("a", "a word", pattern=r"[a-z]+", pattern_doc="lowercase letters")
    items: list[Inner] = opt([], "tables")


@pytest.mark.parametrize("rules, text", [
    ({"ge": 1, "le": 10}, ">= 1 and <= 10"), ({"gt": 0.0, "lt": 1.0}, "> 0 and < 1"),
    ({"length": (2, 2)}, "2 items"), ({"length": (1, 3)}, "1 to 3 items"), ({"multiple_of": 8}, "a multiple of 8"),
    ({"pattern": "[a-z]+", "pattern_doc": "lowercase letters"}, "lowercase letters"), ({}, ""),
])
def test_rules_in_words(rules, text):
    assert rule_text(rules) == text


@pytest.mark.parametrize("data, message", [
    ({"x": 1.0}, "x must be >= 0 and < 1, got 1.0"),
    ({"x": float("nan")}, "x must be a finite number"),
    ({"pair": [1.0]}, "pair must have 2 items, got 1"),
    ({"pair": [1.0, 0.0]}, "pair[1] must be > 0 and <= 5, got 0.0"),
    ({"name": "A"}, "name must be lowercase letters, got 'A'"),
    ({"name": "a\x00"}, "name must not contain a NUL byte"),
    ({"items": [{"n": 0}]}, "items[0].n must be >= 1 and <= 10, got 0"),
    ({"items": [{"m": 0}]}, "unknown setting `items[0].m`"),
])
def test_broken_rules_name_the_key(data, message):
    with pytest.raises(SdloraError) as info:
        from_dict(Tree, data)
    assert message in str(info.value)


def test_values_within_rules_round_trip_and_leaves_list_rules():
    from sdlora.config import tomllib

    tree = from_dict(Tree, {"x": 0, "pair": [5, 0.1], "items": [{"n": 10}]})
    assert tree.x == 0.0 and tree.pair == [5.0, 0.1] and tree.items[0].n == 10
    assert from_dict(Tree, tomllib.loads(to_toml(tree))) == tree
    found = {leaf.key: leaf.rules for leaf in leaves(Tree)}
    assert found["items[].n"] == {"ge": 1, "le": 10} and found["pair"]["length"] == (2, 2)


def test_unknown_rule_is_a_programming_error():
    with pytest.raises(TypeError, match="unknown field rules"):
        opt(1, "doc", minimum=0)
