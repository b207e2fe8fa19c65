"""The project's end-to-end proof that training works: a short LoRA run on the bundled sd-tiny (the
shortened demo run shared with test_demo.py, see conftest.py) teaches it a style it has never seen.

Each check guards against a way training can silently do nothing or the wrong thing: the checker's
style rate must rise by 50 points on held-out seeds (a LoRA whose `up` weights never move, or whose
scale is off, stays near the base rate); the weight change must be non-zero and come back unchanged
from both written files (a file that drops or rescales alpha changes it); weight 0 must give the base
model's pixels exactly, and weight 1 other pixels."""
import json

import numpy as np
import pytest
from PIL import Image

from sdlora.formats.io import load_lora_file
from sdlora.tiny.demo_data import DATA_SEED
from sdlora.tiny.demo_eval import EVAL_SEED

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def metrics(demo_run) -> dict:
    return json.loads((demo_run.result.output / "metrics.json").read_text(encoding="utf-8"))


def test_style_rate_rises_by_50_points_on_held_out_seeds(demo_run, metrics):
    base, lora = metrics["rates"]["base"]["trigger"], metrics["rates"]["lora"]["trigger"]
    assert lora["style"] - base["style"] >= 0.50, metrics["rates"]
    assert base["style"] <= 0.15, "the base model should not draw the new style"
    assert lora["colour"] >= 0.6, "the LoRA should keep the prompted colour"
    seeds = metrics["sampling"]["seeds"]
    assert len(seeds) == lora["n"] and min(seeds) >= EVAL_SEED
    assert not {DATA_SEED, demo_run.settings.seed} & set(seeds)


def test_weights_changed_and_both_files_keep_the_trained_scale(demo_run, metrics):
    norms = dict(metrics["train"]["delta_norm"])
    trained = norms.pop("trained")
    assert trained > 1e-3
    files = {demo_run.result.paths["LoRA (kohya)"].name, demo_run.result.paths["LoRA (diffusers)"].name}
    assert set(norms) == files
    for name, loaded in norms.items():
        assert loaded == pytest.approx(trained, rel=5e-3), name  # files are fp16
    lora, _, _ = load_lora_file(demo_run.result.paths["LoRA (kohya)"])
    ups = [t for k, t in lora.items() if k.endswith("lora_up.weight")]
    assert ups and all(float(t.float().norm()) > 0 for t in ups), "every `up` matrix must have been trained"


def test_weight_zero_is_the_base_model_and_weight_one_is_not(demo_run):
    """The trained file at weight 0 gives the fresh base model's pixels exactly (same process, same
    threads), weight 1 other pixels; the demo's own base column matches up to float reduction order
    (its images were made under other thread settings, which can move a pixel by one level)."""
    from sdlora.generate.loras import LoraSpec, attach_loras, set_weights
    from sdlora.generate.prompts import PromptSpec
    from sdlora.generate.sampling import Sampler
    from sdlora.models import load_components

    out = demo_run.result.output
    summary = json.loads((out / "compare.json").read_text())
    row, (base_png, lora_png) = summary["rows"][0], summary["images"][0]
    spec = PromptSpec(row["prompt"], seed=row["seed"], steps=row["steps"], cfg=row["cfg"],
                      width=row["size"][0], height=row["size"][1], scheduler=row["scheduler"])
    fresh = np.asarray(Sampler(load_components("tiny")).samples(spec)[0].image, dtype=np.int16)
    with_lora = load_components("tiny")
    adapter = attach_loras(with_lora, [LoraSpec(demo_run.result.paths["LoRA (kohya)"])])[0].adapter
    sampler = Sampler(with_lora)
    set_weights(with_lora, {adapter: 0.0})
    off = np.asarray(sampler.samples(spec)[0].image, dtype=np.int16)
    set_weights(with_lora, {adapter: 1.0})
    on = np.asarray(sampler.samples(spec)[0].image, dtype=np.int16)
    assert np.array_equal(off, fresh)
    assert np.abs(on - fresh).max() > 20
    assert np.abs(np.asarray(Image.open(out / base_png), dtype=np.int16) - fresh).max() <= 2
    assert np.abs(np.asarray(Image.open(out / lora_png), dtype=np.int16) - on).max() <= 2
