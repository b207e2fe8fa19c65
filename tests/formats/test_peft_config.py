"""The PEFT LoraConfig in a diffusers file's header is untrusted data: checked types, no regexes run."""
import json
import re

import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.formats.diffusers import from_diffusers
from sdlora.formats.peft_config import METADATA_KEY, literal_module, parse_config, pattern_value

Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
K = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k"


def state(*paths, rank=2):
    return {f"unet.{p}.{name}.weight": torch.randn(*shape) for p in paths
            for name, shape in (("lora_A", (rank, 320)), ("lora_B", (320, rank)))}


def read(config, *paths):
    lora, _ = from_diffusers(state(*(paths or (Q,))), {METADATA_KEY: json.dumps(config)}, source="x.safetensors")
    return lora


@pytest.mark.parametrize("field, value, message", [
    ("unet.alpha_pattern", {"([^!]+)+!": 1}, "is not a module name"),  # catastrophic backtracking
    ("unet.alpha_pattern", {"(": 1}, "is not a module name"),  # re.error
    ("unet.alpha_pattern", {".*to_q": 1}, "is not a module name"),
    ("unet.alpha_pattern", {"a..b": 1}, "is not a module name"),
    ("unet.alpha_pattern", {"to_q\\": 1}, "is not a module name"),
    ("unet.alpha_pattern", {Q: "abc"}, "must be an object of module name -> positive number"),
    ("unet.alpha_pattern", [1, 2], "must be an object"),
    ("unet.alpha_pattern", "to_q", "must be an object"),
    ("unet.lora_alpha", "abc", "must be a positive number"),
    ("unet.lora_alpha", None, "must be a positive number"),
    ("unet.lora_alpha", [1, 2], "must be a positive number"),
    ("unet.lora_alpha", True, "must be a positive number"),
    ("unet.lora_alpha", 0, "must be a positive number"),
    ("unet.lora_alpha", -4, "must be a positive number"),
    ("unet.r", 2.5, "must be a whole number"),
    ("unet.r", "4", "must be a whole number"),
    ("unet.use_rslora", "yes", "must be true or false"),
    ("unet.rank_pattern", {Q: 0}, "must be an object of module name -> whole number"),
])  # fmt: skip
def test_bad_fields_are_one_error_naming_the_file_and_field(field, value, message):
    with pytest.raises(SdloraError, match=rf"^x\.safetensors: metadata 'lora_adapter_metadata' field '{field}' "
                                          rf".*{re.escape(message)}"):
        read({"unet.r": 2, "unet.lora_alpha": 2, field: value})


@pytest.mark.parametrize("text", ["[", "[" * 100000, "1", '"s"', "null"])
def test_not_a_json_object_is_one_error(text):
    with pytest.raises(SdloraError, match=r"^x\.safetensors: metadata 'lora_adapter_metadata' (is not valid JSON|must be)"):
        parse_config({METADATA_KEY: text}, "x.safetensors")


@pytest.mark.parametrize("pattern, module", [
    (re.escape(Q), Q), (Q, Q), ("attn1.to_q", "attn1.to_q"), ("to_q", "to_q"), ("a\\_b", "a_b"),
    ("(", None), ("to_[qk]", None), ("", None), (".to_q", None), ("to_q$", None), ("x" * 5 + "|y", None),
])  # fmt: skip
def test_a_pattern_is_read_as_a_literal_module_name(pattern, module):
    assert literal_module(pattern) == module


@pytest.mark.parametrize("patterns, expected", [
    ({"to_q": 1.0}, 1.0), ({"attn1.to_q": 2.0}, 2.0), ({Q: 3.0}, 3.0),
    ({"o_q": 1.0}, None), ({"attn1": 1.0}, None), ({"to_k": 1.0}, None),
    ({"to_q": 5.0, "attn1.to_q": 6.0}, 5.0), ({"attn1.to_q": 6.0, "to_q": 5.0}, 6.0),  # first in file order
])  # fmt: skip
def test_patterns_match_as_peft_matches_a_module_name(patterns, expected):
    """PEFT: re.match(rf"(.*\\.)?({key})$", path): equal to the path or to a dotted tail of it."""
    peft = [v for k, v in patterns.items() if re.match(rf"(.*\.)?({re.escape(k)})$", Q)]
    assert pattern_value(patterns, [Q]) == expected == (peft[0] if peft else None)


def test_alphas_from_a_valid_config_with_an_escaped_pattern():
    lora = read({"unet.r": 2, "unet.lora_alpha": 4, "unet.alpha_pattern": {re.escape(K): 1.0}}, Q, K)
    assert float(lora[f"unet.{Q}.alpha"]) == 4.0 and float(lora[f"unet.{K}.alpha"]) == 1.0
