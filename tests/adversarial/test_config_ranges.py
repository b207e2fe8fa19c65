"""Hostile config values, by class: every numeric, list and string field of the config tree is tried
with values outside its declared rules (NaN, inf, below, above, wrong type, wrong shape, NUL bytes),
and each must be refused by load_config with an SdloraError naming the dotted key."""
from __future__ import annotations

import math
import re
import typing

import pytest

from sdlora.config import RunConfig, load_config
from sdlora.errors import SdloraError
from sdlora.typedtree import leaves

LEAVES = list(leaves(RunConfig))


def _base(tp) -> type | None:
    """int / float / str for a (maybe optional, maybe list-of) scalar type hint, else None."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (
        typing.Union, __import__("types").UnionType) else [tp]
    tp = args[0] if len(args) == 1 else None
    if typing.get_origin(tp) is list:
        tp = typing.get_args(tp)[0]
    return tp if tp in (int, float, str) else None


NUMERIC = [leaf for leaf in LEAVES if _base(leaf.type) in (int, float)]
STRINGS = [leaf for leaf in LEAVES if _base(leaf.type) is str]


def _override(key: str, toml_value: str) -> list[str]:
    """--set lines that put `toml_value` at `key` (items of table lists go into a one-item list)."""
    if "[]." in key:
        table, leaf = key.split("[].")
        extra = ', path = "imgs"' if table == "data.sources" and leaf != "path" else ""
        extra += ', pattern = "unet.*"' if table == "lora.overrides" and leaf != "pattern" else ""
        return [f"{table}=[{{{leaf} = {toml_value}{extra}}}]"]
    return [f"{key}={toml_value}"]


def _is_list(leaf) -> bool:
    """A list field, optional or not (`list[int] | None` too)."""
    args = [a for a in typing.get_args(leaf.type) if a is not type(None)] if typing.get_origin(leaf.type) in (
        typing.Union, __import__("types").UnionType) else [leaf.type]
    return len(args) == 1 and typing.get_origin(args[0]) is list


def _as_value(leaf, number) -> str:
    text = {math.inf: "inf", -math.inf: "-inf"}.get(number) if isinstance(number, float) else None
    if text is None:
        text = "nan" if isinstance(number, float) and math.isnan(number) else repr(number)
    if _is_list(leaf):
        return "[" + ", ".join([text] * leaf.rules.get("length", (1, 1))[0]) + "]"
    return text


def _refused(leaf, value: str) -> None:
    key = re.escape(leaf.key.replace("[]", "[0]"))
    with pytest.raises(SdloraError, match=key):
        load_config(None, _override(leaf.key, value))


def test_the_tree_has_the_fields_this_file_tries():
    assert len(NUMERIC) > 40 and len(STRINGS) > 10
    assert {"train.lr", "train.betas", "data.sources[].repeats", "lora.overrides[].rank"} <= {f.key for f in NUMERIC}


@pytest.mark.parametrize("leaf", NUMERIC, ids=lambda f: f.key)
def test_every_number_declares_a_range_that_is_enforced(leaf):
    rules = leaf.rules
    low = rules.get("ge", rules.get("gt"))
    high = rules.get("le", rules.get("lt"))
    assert low is not None and high is not None, f"{leaf.key}: declare a lower and an upper bound"
    step = 1 if _base(leaf.type) is int else max(abs(high), 1.0) * 1e-6
    below = low - step if "ge" in rules else low
    above = high + step if "le" in rules else high
    for bad in (below, above, above * 10 + 10, -1e30 if _base(leaf.type) is float else -10**30):
        _refused(leaf, _as_value(leaf, bad))
    if _base(leaf.type) is float:
        for bad in (math.nan, math.inf, -math.inf):
            _refused(leaf, _as_value(leaf, bad))
    for wrong in ('"1"', "true", "{x = 1}", "[[1]]"):
        _refused(leaf, wrong)
    at_bound = low if "ge" in rules else high if "le" in rules else None
    if at_bound is not None and "multiple_of" not in rules:  # a closed bound itself is allowed
        try:
            load_config(None, _override(leaf.key, _as_value(leaf, at_bound)))
        except SdloraError as exc:  # only a check relating two fields may refuse it, naming the other key
            assert not str(exc).startswith(leaf.key.replace("[]", "[0]")), exc


def test_list_shapes_are_checked():
    for value in ("[]", "[0.9]", "[0.9, 0.99, 0.999]", "0.9"):
        with pytest.raises(SdloraError, match=r"train\.betas"):
            load_config(None, [f"train.betas={value}"])
    with pytest.raises(SdloraError, match=r"save\.formats must have 1 to 3 items"):
        load_config(None, ["save.formats=[]"])


@pytest.mark.parametrize("leaf", STRINGS, ids=lambda f: f.key)
def test_no_string_setting_takes_a_nul_byte(leaf):
    value = '"a\\u0000b"'
    _refused(leaf, f"[{value}]" if _is_list(leaf) else value)


@pytest.mark.parametrize("name", ["../../esc", "/tmp/abs", "a/b", "a\\b", ".", "..", "x" * 201, "tab\there"])
def test_save_name_stays_in_the_run_folder(name):  # "" is allowed: the run folder's name
    with pytest.raises(SdloraError, match=r"save\.name must be (empty or )?a plain file name"):
        load_config(None, [f"save.name={name!r}".replace("'", '"') if "\\" not in name else f"save.name='{name}'"])


@pytest.mark.parametrize("ext", [".", "", "txt", "./x", ".a/b", "..txt"])
def test_caption_extension_is_an_extension(ext):
    with pytest.raises(SdloraError, match=r"data\.sources\[0\]\.caption_extension"):
        load_config(None, [f'data.sources=[{{path = "imgs", caption_extension = "{ext}"}}]'])


@pytest.mark.parametrize("override, key", [
    ("train.steps.x=1", "train.steps"), ("validation.prompts.x=1", "validation.prompts"),
    ("data.sources.x=1", "data.sources"), ("train.lr.a.b=1", "train.lr"),
])
def test_set_below_a_single_value_names_it(override, key):
    with pytest.raises(SdloraError, match=re.escape(key)):
        load_config(None, ["train.steps=5", 'validation.prompts=["a"]', 'data.sources=[{path="x"}]', override])


@pytest.mark.parametrize("sets, key", [
    (["data.min_bucket_side=512", "data.max_bucket_side=256"], "data.min_bucket_side"),
    (["train.timestep_min=500", "train.timestep_max=500"], "train.timestep_min"),
    (["data.resolution=64", "data.bucket_step=128"], "data.bucket_step"),
])
def test_fields_that_relate_are_checked_together(sets, key):
    with pytest.raises(SdloraError, match=re.escape(key)):
        load_config(None, sets)


def test_config_given_a_folder_is_one_line(tmp_path):
    with pytest.raises(SdloraError, match="is a folder"):
        load_config(tmp_path)
