"""The Train tab's form, generated from the typed config tree (sdlora.config), so it cannot drift.

Every leaf setting becomes one `Field` (its kind picks the widget, its doc is the help text); the
common ones are shown first, the rest under "all settings". The form's values rebuild a RunConfig
through the same `from_dict`/`validate` as a TOML file, so errors name the dotted key, and
`command` writes the equivalent `sdlora train` line (recipe + `--set` for what differs).
"""
from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sdlora.config import RunConfig, SourceConfig, from_dict, load_config, to_dict, validate
from sdlora.errors import SdloraError
from sdlora.typedtree import Leaf, leaves, rule_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TABLE_LISTS = ("data.sources", "lora.overrides")  # edited elsewhere (Dataset tab) or kept from the recipe
COMMON = ("model.name", "save.output_dir", "save.name", "train.steps", "lora.rank", "lora.alpha",
          "lora.unet_preset", "lora.train_text_encoder", "train.lr", "train.batch_size", "train.optimizer",
          "train.lr_scheduler", "data.resolution", "train.seed", "train.mixed_precision",
          "save.every_n_steps", "validation.prompts", "validation.every_n_steps")


@dataclass(frozen=True)
class Field:
    key: str
    kind: str  # "choice", "bool", "lines" (list of str, one per line), "multi" (list of choices), "text"
    type_name: str
    doc: str
    allowed: str = ""  # the value rules in words ("at least 1"), as in docs/config.md
    choices: tuple = ()
    optional: bool = False
    is_str: bool = False


def _field(leaf: Leaf) -> Field:
    tp, key, type_name, doc = leaf.type, leaf.key, leaf.type_name, leaf.doc
    allowed = rule_text(leaf.rules)
    args = typing.get_args(tp)
    optional = type(None) in args
    if optional:
        tp = next(a for a in args if a is not type(None))
    origin, inner = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return Field(key, "choice", type_name, doc, allowed, inner, optional)
    if tp is bool:
        return Field(key, "bool", type_name, doc, allowed)
    if origin is list and inner[0] is str:
        return Field(key, "lines", type_name, doc, allowed)
    if origin is list and typing.get_origin(inner[0]) is Literal:
        return Field(key, "multi", type_name, doc, allowed, typing.get_args(inner[0]))
    return Field(key, "text", type_name, doc, allowed, optional=optional, is_str=tp is str)


def fields() -> list[Field]:
    """Every leaf setting of the config tree, in the tree's order (the common ones first)."""
    out = [_field(leaf) for leaf in leaves(RunConfig) if "[]" not in leaf.key and leaf.key not in TABLE_LISTS]
    return sorted(out, key=lambda f: (f.key not in COMMON, COMMON.index(f.key) if f.key in COMMON else 0))


def literal(value: Any) -> str:
    """A value as a TOML literal (what `--set` and config files read)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {literal(v)}" for k, v in value.items() if v is not None) + "}"
    raise SdloraError(f"cannot write {value!r} as TOML")


def to_widget(f: Field, value: Any) -> Any:
    """A config value as its widget shows it."""
    if f.kind in ("choice", "bool", "multi"):
        return value
    if f.kind == "lines":
        return "\n".join(value)
    if value is None:
        return ""
    return value if f.is_str else literal(value)


def from_widget(f: Field, raw: Any) -> Any:
    """A widget's value as a config value (type errors are left to the config, which names the key)."""
    if f.kind in ("choice", "bool", "multi"):
        return raw
    if f.kind == "lines":
        return [line.strip() for line in str(raw or "").splitlines() if line.strip()]
    text = str(raw if raw is not None else "").strip()
    if not text:
        return None if f.optional else ("" if f.is_str else None)
    if f.is_str:
        return text
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def form_values(cfg: RunConfig, form: list[Field]) -> list[Any]:
    flat = flatten(to_dict(cfg))
    return [to_widget(f, flat[f.key]) for f in form]


TABLE_LEAVES = {leaf.key for leaf in leaves(RunConfig) if typing.get_origin(leaf.type) is dict}  # optimizer_args


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and dotted not in TABLE_LEAVES:  # a table-valued setting is one value
            out.update(flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def build_config(form: list[Field], values: list[Any], sources: list[SourceConfig],
                 base: RunConfig | None = None) -> RunConfig:
    """The RunConfig the form describes; sources from the Dataset tab, per-module overrides from `base`."""
    tree: dict = {}
    for f, raw in zip(form, values):
        value = from_widget(f, raw)
        if value is None and not f.optional:
            raise SdloraError(f"{f.key}: a value is required ({f.type_name})")
        *parents, leaf = f.key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    tree.setdefault("data", {})["sources"] = [dataclasses.asdict(s) for s in sources]
    tree.setdefault("lora", {})["overrides"] = [dataclasses.asdict(o) for o in (base.lora.overrides if base else [])]
    cfg = from_dict(RunConfig, tree)
    validate(cfg)
    return cfg


def load_recipe(path: str | None) -> RunConfig:
    """A recipe or a run's config.toml (None: the defaults)."""
    return load_config(path) if path else RunConfig()


def recipes(*roots: str | Path) -> list[str]:
    """examples/*/config.toml and runs' config.toml files under `roots` (one folder deep)."""
    found = []
    for root in roots:
        root = Path(root)
        if root.is_dir():
            found += [str(p) for p in sorted(root.glob("*/config.toml"))]
    return found


def command(recipe: str | None, cfg: RunConfig) -> str:
    """The `sdlora train` line that gives the same config: the recipe, then `--set` for what differs."""
    base = flatten(to_dict(load_recipe(recipe)))
    mine = flatten(to_dict(cfg))
    changed = {key: value for key, value in mine.items() if value != base.get(key)}
    if any(value is None for value in changed.values()):  # TOML has no "unset": point at the written file
        return " ".join(shlex.quote(p) for p in ["sdlora", "train", "--config", str(Path(cfg.save.output_dir) / "config.toml")])
    sets = [f"{key}={literal(value)}" for key, value in changed.items()]
    parts = ["sdlora", "train"] + (["--config", recipe] if recipe else [])
    for text in sets:
        parts += ["--set", text]
    return " ".join(shlex.quote(p) for p in parts)
