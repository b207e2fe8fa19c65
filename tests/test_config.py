import sys

import pytest

from sdlora.config import RunConfig, iter_fields, load_config, to_toml
from sdlora.errors import SdloraError

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the tomli backport (a dependency there)
    import tomli as tomllib


def test_defaults_are_sd14():
    cfg = RunConfig()
    assert cfg.model.name == "CompVis/stable-diffusion-v1-4"
    assert cfg.data.resolution == 512 and cfg.lora.alpha is None


def test_file_then_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nlr = 3e-4\nsteps = 10\n[[data.sources]]\npath = "imgs"\nrepeats = 5\n')
    cfg = load_config(path, ["train.lr=1e-5", "data.sources.0.repeats=2", "lora.unet_preset=unet-attn"])
    assert cfg.train.lr == 1e-5 and cfg.train.steps == 10
    assert cfg.data.sources[0].path == "imgs" and cfg.data.sources[0].repeats == 2
    assert cfg.lora.unet_preset == "unet-attn"  # a bare word is taken as a string


def test_int_accepted_for_float_and_resolved_config_round_trips():
    cfg = load_config(None, ["train.lr=1", 'data.sources=[{path="a", prompt="sks"}]',
                             'lora.overrides=[{pattern="unet.*", rank=8}]'])
    assert isinstance(cfg.train.lr, float)
    again = load_config(None, base=tomllib.loads(to_toml(cfg)))
    assert again == cfg


@pytest.mark.parametrize("override, key", [
    (["train.lrr=1"], "train.lrr"),
    (["train.lr=\"fast\""], "train.lr"),
    (["lora.init=orthogonal"], "lora.init"),
    (["train.batch_size=0"], "train.batch_size"),
    (["data.caption_dropout=1.5"], "data.caption_dropout"),
    (['data.sources=[{path="a", repeat=3}]'], "data.sources[0].repeat"),
    (["data.sources=[{}]"], "data.sources[0].path"),
    (["lora.rank=true"], "lora.rank"),
    (["lora.algorithm=lycoris"], "lora.algorithm"),
    (["lora.factor=0"], "lora.factor"),
    (["lora.algorithm=loha", 'save.formats=["kohya", "diffusers"]'], "save.formats"),
    (["train.loss_type=huberish"], "train.loss_type"),
    (["train.huber_c=0"], "train.huber_c"),
    (["train.huber_schedule=linear"], "train.huber_schedule"),
    (["train.timestep_sampling=cosine"], "train.timestep_sampling"),
    (["train.timestep_shift=0"], "train.timestep_shift"),
    (["train.multires_noise_discount=1.5"], "train.multires_noise_discount"),
    (["train.ip_noise_gamma=-0.1"], "train.ip_noise_gamma"),
    (["train.zero_terminal_snr=true"], "train.zero_terminal_snr needs train.prediction_type"),
    (["nonsense"], "nonsense"),
    (['lora.overrides=[{pattern="(", rank=2}]'], "lora.overrides[0].pattern is not a valid regular expression"),
])
def test_errors_name_the_key(override, key):
    with pytest.raises(SdloraError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, override)


def test_bad_toml_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train\nlr = ")
    with pytest.raises(SdloraError, match="broken.toml"):
        load_config(path)
    with pytest.raises(SdloraError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_every_field_is_documented():
    fields = list(iter_fields())
    assert len(fields) > 60
    assert [k for k, _, _, doc, _ in fields if not doc] == []


def test_config_reference_in_docs_is_current():
    from pathlib import Path

    from sdlora.config import reference_markdown
    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert doc.read_text(encoding="utf-8") == reference_markdown(), \
        "docs/config.md is stale: run `python scripts/gen_config_docs.py`"
