"""The Train form is generated from the config tree: it covers every setting, round-trips every recipe,
names the bad field, and its command line resolves to the same config through the real CLI."""
import shlex
from pathlib import Path

import pytest

from sdlora.cli import build_parser
from sdlora.config import SourceConfig, iter_fields, load_config, to_toml
from sdlora.errors import SdloraError
from sdlora.train.entry import resolve_config
from sdlora.ui import trainform

RECIPES = sorted(str(p) for p in Path("examples").glob("*/config.toml"))


def test_form_has_one_widget_per_setting_with_its_doc():
    form = trainform.fields()
    leaves = {key: doc for key, _, _, doc, _ in iter_fields() if "[]" not in key and key not in trainform.TABLE_LISTS}
    assert {f.key: f.doc for f in form} == leaves
    assert [f.key for f in form[:len(trainform.COMMON)]] == list(trainform.COMMON)
    kinds = {f.key: f.kind for f in form}
    assert kinds["train.lr_scheduler"] == "choice" and kinds["lora.dora"] == "bool"
    assert kinds["validation.prompts"] == "lines" and kinds["save.formats"] == "multi"


def _cli_config(line: str):
    args = build_parser().parse_args(shlex.split(line)[1:])
    return resolve_config(args.config, args.sets, {}, [], None)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_round_trips_through_the_form_and_the_command(recipe, shapes):
    form = trainform.fields()
    base = trainform.load_recipe(recipe)
    values = trainform.form_values(base, form)
    sources = [SourceConfig(path=str(shapes), role="instance", repeats=2)]
    cfg = trainform.build_config(form, values, sources, base)
    assert to_toml(cfg).replace(str(shapes), "X") != to_toml(base)  # only the sources differ ...
    base.data.sources = sources
    assert to_toml(cfg) == to_toml(base)  # ... everything else came through the widgets unchanged
    values[[f.key for f in form].index("train.lr")] = "3e-4"
    values[[f.key for f in form].index("validation.prompts")] = "a <b>cat</b>\n\nsks dog"
    cfg = trainform.build_config(form, values, sources, base)
    assert cfg.train.lr == 3e-4 and cfg.validation.prompts == ["a <b>cat</b>", "sks dog"]
    line = trainform.command(recipe, cfg)
    assert to_toml(_cli_config(line)) == to_toml(cfg)


def test_command_from_defaults_resolves_the_same():
    form = trainform.fields()
    values = trainform.form_values(trainform.load_recipe(None), form)
    values[[f.key for f in form].index("model.name")] = "tiny"
    values[[f.key for f in form].index("lora.alpha")] = "4"
    cfg = trainform.build_config(form, values, [], None)
    assert to_toml(_cli_config(trainform.command(None, cfg))) == to_toml(cfg)


@pytest.mark.parametrize("key, raw, named", [
    ("train.lr", "fast", "train.lr"), ("lora.rank", "0", "lora.rank"), ("train.steps", "", "train.steps"),
    ("data.resolution", "100", "data.resolution"), ("lora.dropout", "1.5", "lora.dropout")])
def test_bad_values_name_the_field(key, raw, named):
    form = trainform.fields()
    values = trainform.form_values(load_config(None), form)
    values[[f.key for f in form].index(key)] = raw
    with pytest.raises(SdloraError, match=named.replace(".", r"\.")):
        trainform.build_config(form, values, [], None)


def test_recipes_lists_examples_and_runs(tmp_path):
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "config.toml").write_text("")
    found = trainform.recipes("examples", tmp_path)
    assert found == RECIPES + [str(tmp_path / "run1" / "config.toml")]
