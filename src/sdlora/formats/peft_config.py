"""The PEFT LoraConfig that diffusers stores in a LoRA file's header, read as untrusted data.

diffusers writes `lora_adapter_metadata` = JSON {"unet.r": 4, "unet.lora_alpha": 4, "unet.alpha_pattern":
{module: alpha}, "unet.use_rslora": false, "text_encoder.r": ...}. The fields sdlora reads are checked
against SCHEMA (types and ranges) and a bad one is one error naming the file and the field.

PEFT matches a pattern key `k` against a module path with the regex `(.*\\.)?(k)$`. A file must never
make us run its regexes (a pattern like `([^!]+)+!` backtracks for minutes), and the keys diffusers
and sdlora write are module names (sdlora's escaped with re.escape). So a key is read as a literal
module path, after undoing backslash escapes, and matched as PEFT would match such a key: equal to the
path or to a dotted tail of it. A key holding anything but a module name is refused.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping

from sdlora.errors import SdloraError

METADATA_KEY = "lora_adapter_metadata"
MODULE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


# field -> (check, what it must be); only the fields sdlora reads (others are kept, unread)
SCHEMA = {
    "r": (_positive_int, "a whole number >= 1"),
    "lora_alpha": (_positive_number, "a positive number"),
    "use_rslora": (lambda v: isinstance(v, bool), "true or false"),
    "alpha_pattern": (lambda v: isinstance(v, dict) and all(_positive_number(x) for x in v.values()),
                      "an object of module name -> positive number"),
    "rank_pattern": (lambda v: isinstance(v, dict) and all(_positive_int(x) for x in v.values()),
                     "an object of module name -> whole number >= 1"),
}


def literal_module(pattern: str) -> str | None:
    """The module path a pattern key names ('down_blocks\\.0\\.attn1\\.to_q' -> 'down_blocks.0.attn1.to_q'),
    or None when it is a real regular expression (anything but letters, digits, '_' and '.')."""
    out, escaped = [], False
    for char in pattern:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    name = "".join(out)
    ok = not escaped and name and set(name) <= MODULE_CHARS and "" not in name.split(".")
    return name if ok else None


def _checked_patterns(value: dict, field: str, source: str) -> dict[str, float]:
    patterns: dict[str, float] = {}
    for key, number in value.items():
        name = literal_module(key)
        if name is None:
            raise SdloraError(f"{source}: metadata {METADATA_KEY!r} field {field!r} has the key {key[:80]!r}, "
                              "which is not a module name (sdlora never runs regular expressions from files); "
                              "re-export the LoRA or remove the pattern")
        patterns.setdefault(name, float(number))  # PEFT: the first matching key wins
    return patterns


def parse_config(metadata: Mapping[str, str], source: str) -> dict:
    """The checked config: {"unet.r": 4, "unet.alpha_pattern": {module path: alpha}, ...}; {} without one."""
    text = metadata.get(METADATA_KEY)
    if not text:
        return {}
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise SdloraError(f"{source}: metadata {METADATA_KEY!r} is not valid JSON ({str(err)[:120]})") from None
    if not isinstance(config, dict):
        raise SdloraError(f"{source}: metadata {METADATA_KEY!r} must be a JSON object")
    checked = dict(config)
    for field, value in config.items():
        name = field.rpartition(".")[2]
        if name not in SCHEMA or value is None and name.endswith("_pattern"):
            continue
        check, what = SCHEMA[name]
        if not check(value):
            raise SdloraError(f"{source}: metadata {METADATA_KEY!r} field {field!r} must be {what}, "
                              f"got {json.dumps(value)[:80]}; re-export the LoRA")
        if name == "alpha_pattern":
            checked[field] = _checked_patterns(value, field, source)
    return checked


def _tails(path: str) -> list[str]:
    """'a.b.c' -> ['a.b.c', 'b.c', 'c']: what a PEFT pattern key may equal to match `path`."""
    parts = path.split(".")
    return [".".join(parts[i:]) for i in range(len(parts))]


def pattern_value(patterns: Mapping[str, float], paths) -> float | None:
    """The value of the first pattern (in file order) naming one of `paths` or a dotted tail of one."""
    order = {name: i for i, name in enumerate(patterns)}
    hits = [name for path in paths for name in _tails(path) if name in order]
    return patterns[min(hits, key=order.__getitem__)] if hits else None


def config_alpha(config: Mapping, component: str, paths: list[str], rank: int) -> float | None:
    """alpha of one module (`paths`: the spellings it may have in patterns) from a checked config, as PEFT
    reads it; None when the file has no config for `component`."""
    if f"{component}.lora_alpha" not in config and f"{component}.r" not in config:
        return None
    alpha = float(config.get(f"{component}.lora_alpha", config.get(f"{component}.r", rank)))
    matched = pattern_value(config.get(f"{component}.alpha_pattern") or {}, paths)
    alpha = alpha if matched is None else matched
    if config.get(f"{component}.use_rslora"):  # scale alpha / sqrt(r) == alpha' / r
        alpha = alpha * math.sqrt(rank)
    return alpha
