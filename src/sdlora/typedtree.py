"""Typed trees of dataclasses read from TOML: coercion, declared value rules, TOML output, field listing.

A field is declared with `opt(default, doc, **rules)`; the rules are data in the field's metadata and
checked by one generic function when a tree is loaded, so a range is written once and also shows
up in the generated reference:

    ge / gt / le / lt   bounds of a number (for a list of numbers: of each item)
    length              (min, max) number of items of a list
    multiple_of         an int must be a multiple of this
    pattern             a str (or each str of a list) must fullmatch this regex; `pattern_doc` says it in words

A `dict[str, T]` field is a table of plain keys (identifiers) with values of type T.

Whatever the rules, a float must be finite and a str must not hold a NUL byte.
"""
from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal, Union

from sdlora.errors import SdloraError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

RULES = ("ge", "gt", "le", "lt", "length", "multiple_of", "pattern", "pattern_doc")
_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def opt(default: Any, doc: str, **rules: Any) -> Any:
    """A documented field with optional value rules. Mutable defaults (lists, dicts) are copied per instance."""
    unknown = set(rules) - set(RULES)
    if unknown:
        raise TypeError(f"unknown field rules {sorted(unknown)}")
    metadata = {"doc": doc, **rules}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def type_name(tp: Any) -> str:
    """Readable type for messages and docs: `int`, `float or none`, `"center" or "random"`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " or ".join(f'"{a}"' for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("none" if a is type(None) else type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return "table"
    return getattr(tp, "__name__", None) or str(tp)


# ----------------------------------------------------------------------------- rules

def rule_text(rules: dict) -> str:
    """The rules in words, for docs and messages: `>= 1 and <= 4096`."""
    parts = [f"{_WORDS[k]} {rules[k]:g}" if isinstance(rules[k], float) else f"{_WORDS[k]} {rules[k]}"
             for k in ("ge", "gt", "le", "lt") if k in rules]
    if "multiple_of" in rules:
        parts.append(f"a multiple of {rules['multiple_of']}")
    if "length" in rules:
        lo, hi = rules["length"]
        parts.append(f"{lo} item{'s' if lo != 1 else ''}" if lo == hi else f"{lo} to {hi} items")
    if "pattern" in rules:
        parts.append(rules.get("pattern_doc") or f"matching `{rules['pattern']}`")
    return " and ".join(parts)


def check_scalar(value: Any, rules: dict, key: str) -> None:
    """Raise SdloraError naming `key` when a number or str breaks the declared (or the universal) rules."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SdloraError(f"{key} must be a finite number, got {value}")
    if isinstance(value, str):
        if "\x00" in value:
            raise SdloraError(f"{key} must not contain a NUL byte, got {value!r}")
        if "pattern" in rules and not re.fullmatch(rules["pattern"], value):
            raise SdloraError(f"{key} must be {rules.get('pattern_doc') or 'matching ' + rules['pattern']}, "
                              f"got {value!r}")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    bounds = {"ge": value >= rules.get("ge", value), "gt": "gt" not in rules or value > rules["gt"],
              "le": value <= rules.get("le", value), "lt": "lt" not in rules or value < rules["lt"]}
    broken = [k for k, ok in bounds.items() if not ok]
    if broken or ("multiple_of" in rules and value % rules["multiple_of"]):
        said = {k: rules[k] for k in ("ge", "gt", "le", "lt", "multiple_of") if k in rules}
        raise SdloraError(f"{key} must be {rule_text(said)}, got {value!r}")


def check_value(value: Any, rules: dict, key: str) -> None:
    """check_scalar for a leaf, or for a list: its length, then each item."""
    if isinstance(value, list):
        if "length" in rules and not rules["length"][0] <= len(value) <= rules["length"][1]:
            raise SdloraError(f"{key} must have {rule_text({'length': rules['length']})}, got {len(value)}")
        for i, item in enumerate(value):
            check_scalar(item, rules, f"{key}[{i}]")
    else:
        check_scalar(value, rules, key)


# ----------------------------------------------------------------------------- reading

def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against type hint `tp`; return it converted (int->float, table->dataclass)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except SdloraError as exc:
                errors.append(str(exc))
        raise SdloraError(errors[0] if len(errors) == 1 else f"{key}: {value!r} is not a valid {type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise SdloraError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise SdloraError(f"{key}: expected a list, got {value!r}")
        return [coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SdloraError(f"{key}: expected a table of settings, got {value!r}")
        out = {}
        for name, item in value.items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise SdloraError(f"{key}: {name!r} is not a plain key (letters, digits and _)")
            out[name] = coerce(item, args[1], f"{key}.{name}")
            check_value(out[name], {}, f"{key}.{name}")  # finite numbers, no NUL
        return out
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise SdloraError(f"{key}: expected a table of settings, got {value!r}")
        return from_dict(tp, value, key)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise SdloraError(f"{key}: expected {type_name(tp)}, got {value!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (TOML) dict; unknown keys, wrong types and broken rules name the dotted key."""
    types_ = hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else key
            raise SdloraError(f"unknown setting `{where}` (known here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = coerce(value, types_[name], key)
        check_value(kwargs[name], fields[name].metadata, key)
    return cls(**kwargs)


# ----------------------------------------------------------------------------- TOML text and --set overrides

def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=2e-4` -> (["train", "lr"], 2e-4). Values are TOML; bare words are strings."""
    if "=" not in text:
        raise SdloraError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=2e-4")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set dotted keys in the raw config dict (numeric parts index lists: data.sources.0.path=x)."""
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(parts):
            where = ".".join(parts[:i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise SdloraError(f"--set {text}: `{where}` is not an existing list index")
                index: Any = int(part)
            elif isinstance(node, dict):
                index = part
            else:
                raise SdloraError(f"--set {text}: `{'.'.join(parts[:i])}` is a single value, not a table")
            if i == len(parts) - 1:
                node[index] = value
            else:
                node = node[index] if isinstance(node, list) else node.setdefault(part, {})
    return data


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SdloraError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise SdloraError(f"{path}: is a folder, not a config file (give its .toml file)") from None
    except OSError as exc:
        raise SdloraError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SdloraError(f"{path}: not valid TOML ({exc})") from None


def merge_tables(into: dict, new: dict) -> dict:
    """Deep-merge TOML table `new` into `into` (tables merge, everything else is replaced)."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            into[key] = merge_tables(dict(into[key]), value)
        else:
            into[key] = value
    return into


# ----------------------------------------------------------------------------- writing

def to_dict(tree: Any) -> dict:
    return dataclasses.asdict(tree)


def to_toml(tree: Any) -> str:
    """A tree as TOML (None values are left out: absent means default None)."""
    lines: list[str] = []
    _emit_table(to_dict(tree), [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit_table(table: dict, path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_list(v) and v is not None}
    if path and scalars:
        lines.append(f"\n[{'.'.join(path)}]")
    lines.extend(f"{k} = {toml_value(v)}" for k, v in scalars.items())
    for key, value in table.items():
        if _is_table(value):
            _emit_table(value, path + [key], lines)
        elif _is_table_list(value):
            for item in value:
                lines.append(f"\n[[{'.'.join(path + [key])}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in item.items() if v is not None)


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        escaped = v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


# ----------------------------------------------------------------------------- listing

@dataclasses.dataclass(frozen=True)
class Leaf:
    """One leaf setting: dotted key (`[]` marks items of a table list), its type, default, doc and rules."""

    key: str
    type: Any
    default: Any
    doc: str
    rules: dict

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def leaves(cls: type, prefix: str = ""):
    """Yield a Leaf for every leaf field of the tree `cls`, depth first in declaration order."""
    types_ = hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = types_[f.name]
        if dataclasses.is_dataclass(tp):
            yield from leaves(tp, key)
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        rules = {k: v for k, v in f.metadata.items() if k in RULES}
        yield Leaf(key, tp, default, f.metadata.get("doc", ""), rules)
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if inner is not None and dataclasses.is_dataclass(inner):
            yield from leaves(inner, f"{key}[]")
