"""`sdlora demo` end to end (a shortened run shared with test_learning.py, see conftest.py): every
output is there and well-formed. The settings checks need no run."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.formats.io import load_lora_file
from sdlora.tiny.demo import LORA_NAME, SD_TINY_GUIDANCE, DemoSettings, grid_specs, train_flags
from sdlora.tiny.demo_eval import eval_seeds


@pytest.fixture(scope="module")
def metrics(demo_run) -> dict:
    return json.loads((demo_run.result.output / "metrics.json").read_text(encoding="utf-8"))


def test_every_output_is_written(demo_run, metrics):
    r, s = demo_run.result, demo_run.settings
    assert {"dataset", "LoRA (kohya)", "LoRA (diffusers)", "grid", "report", "metrics", "training run"} <= set(r.paths)
    assert all(path.exists() for path in r.paths.values()), r.paths
    assert len(list((r.output / "data").glob("*.png"))) == len(list((r.output / "data").glob("*.txt"))) == s.images
    run = r.paths["training run"]
    assert (run / "config.toml").is_file() and (run / "train.log").is_file()
    assert 'name = "tiny"' in (run / "config.toml").read_text()
    assert r.passed == metrics["passed"] == all(t["passed"] for t in metrics["targets"])


def test_lora_is_written_in_kohya_and_diffusers_formats(demo_run):
    r, s = demo_run.result, demo_run.settings
    kohya, meta, fmt = load_lora_file(r.paths["LoRA (kohya)"])
    assert fmt == "kohya" and r.paths["LoRA (kohya)"].name == f"{LORA_NAME}.safetensors"
    assert meta["ss_network_dim"] == str(s.rank) and meta["ss_steps"] == str(s.steps)
    diffusers, _, fmt2 = load_lora_file(r.paths["LoRA (diffusers)"])
    assert fmt2 == "diffusers" and set(diffusers) == set(kohya)
    assert all(np.array_equal(kohya[k].float().numpy(), diffusers[k].float().numpy()) for k in kohya)
    # attention/projections and (LoCon) resnet convolutions are adapted
    assert any("attn2.to_k" in k for k in kohya)
    assert any(".resnets." in k and k.endswith("conv1.lora_down.weight") for k in kohya)


def test_grid_and_compare_summary(demo_run):
    out, s = demo_run.result.output, demo_run.settings
    summary = json.loads((out / "compare.json").read_text())
    assert [c["label"] for c in summary["columns"]] == ["base", f"{LORA_NAME} @ 1"]
    rows = summary["rows"]
    assert len(rows) == s.grid_prompts + 2
    assert [r["seed"] for r in rows[:s.grid_prompts]] == eval_seeds(s.grid_prompts)
    assert all(r["prompt"].endswith("in sks style") for r in rows[:s.grid_prompts])
    assert not any("sks" in r["prompt"] for r in rows[s.grid_prompts:])
    settings = {(r["steps"], r["cfg"], tuple(r["size"]), r["scheduler"]) for r in rows}
    assert settings == {(20, SD_TINY_GUIDANCE, (64, 64), "pndm")}
    images = [out / p for row in summary["images"] for p in row]
    assert len(images) == 2 * len(rows)
    assert all(Image.open(p).size == (64, 64) for p in images)
    grid = Image.open(out / "grid.png")
    assert grid.width >= 2 * 64 and grid.height >= len(rows) * 64


def test_metrics_json(demo_run, metrics):
    s = demo_run.settings
    assert {"passed", "targets", "rates", "leak", "sampling", "train", "settings", "seconds", "machine"} <= set(metrics)
    groups = [metrics["rates"]["base"]["trigger"], metrics["rates"]["lora"]["trigger"],
              metrics["rates"]["lora"]["no_trigger"]]
    for group in groups:
        assert group["n"] == s.eval_prompts * s.eval_rounds
        assert all(0.0 <= group[k] <= 1.0 for k in ("style", "colour", "shape", "both"))
    assert metrics["leak"] == metrics["rates"]["lora"]["no_trigger"]["style"]
    assert [t["target"] for t in metrics["targets"]] == ["<= 0.1", ">= 0.8", ">= 0.7"]
    assert metrics["sampling"]["guidance"] == SD_TINY_GUIDANCE and metrics["sampling"]["steps"] == 20
    assert set(metrics["seconds"]) == {"dataset", "train", "compare", "measure", "total"}
    assert metrics["seconds"]["total"] >= metrics["seconds"]["train"] > 0
    assert metrics["train"]["steps"] == s.steps and metrics["settings"]["steps"] == s.steps


def test_report_holds_the_metrics_and_the_grid(demo_run, metrics):
    html = (demo_run.result.output / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and "<h2>Metrics</h2>" in html
    lora_style = round(100 * metrics["rates"]["lora"]["trigger"]["style"], 1)
    assert f"{lora_style:.4f}" in html and "prompts without trigger (leak)" in html
    assert ("all targets met" in html) == metrics["passed"] and "data:image/png;base64," in html
    assert "<script" not in html and not re.search(r"src=['\"]https?:", html)


def test_summary_is_printed_with_every_path(demo_run):
    printed = demo_run.printed
    assert "checker rate" in printed and "targets:" in printed and "style, trigger prompts" in printed
    for path in demo_run.result.paths.values():
        assert str(path) in printed


@pytest.mark.parametrize("change, words", [({"steps": 0}, "--steps"), ({"eval_prompts": 0}, "--eval-prompts"),
                                           ({"grid_prompts": 0}, "--grid-prompts"), ({"lr": 0.0}, "--lr"),
                                           ({"guidance": 0.5}, "--guidance")])
def test_bad_settings_raise_before_any_work(tmp_path, change, words):
    from sdlora.tiny.demo import run_demo

    with pytest.raises(SdloraError, match=words):
        run_demo(DemoSettings(output=tmp_path / "out", **change), say=lambda line: None)
    assert not (tmp_path / "out").exists()


def test_train_flags_are_valid_sdlora_train_settings(tmp_path):
    from sdlora.train.entry import resolve_config

    s = DemoSettings(rank=4, lr=2e-3, steps=7)
    cfg = resolve_config(None, ["lora.alpha=2"], train_flags(s, tmp_path / "run"), [str(tmp_path / "data")])
    assert (cfg.model.name, cfg.lora.rank, cfg.lora.alpha, cfg.train.lr, cfg.train.steps) == ("tiny", 4, 2.0, 2e-3, 7)
    assert cfg.save.formats == ["kohya", "diffusers"] and cfg.data.resolution == 64 and not cfg.data.buckets
    assert cfg.data.cache_latents == "memory" and cfg.data.cache_text and cfg.train.lr_scheduler == "cosine"
    assert [src.path for src in cfg.data.sources] == [str(tmp_path / "data")]


def test_the_concept_task_trains_on_masks_for_every_image_it_writes_at_noisy_timesteps(tmp_path):
    from sdlora.tiny.demo import mask_flags, write_dataset
    from sdlora.tiny.demo_tasks import TASKS
    from sdlora.train.entry import resolve_config

    task = TASKS["concept"]
    write_dataset(task, tmp_path, 8)
    flags = {**train_flags(DemoSettings(task="concept").resolved(), tmp_path / "run"), **task.train,
             **mask_flags(task, tmp_path)}
    cfg = resolve_config(None, [], flags, [str(tmp_path / "data")])
    assert (cfg.data.masks, cfg.data.mask_dir) == ("folder", str(tmp_path / "masks"))
    assert (cfg.train.timestep_sampling, cfg.train.logit_mean, cfg.data.caption_dropout) == ("logit_normal", 1.0, 0.0)
    images = sorted(p.name for p in (tmp_path / "data").glob("*.png"))
    assert images and sorted(p.name for p in (tmp_path / "masks").glob("*.png")) == images
    assert mask_flags(TASKS["style"], tmp_path) == {} and not TASKS["subject"].masks


def test_grid_prompts_reuse_the_evaluation_seeds():
    specs = grid_specs(DemoSettings(grid_prompts=3))
    assert [sp.seed for sp in specs] == eval_seeds(3) + eval_seeds(2)
    assert [sp.prompt for sp in specs][:3] == ["a red circle in sks style", "an orange square in sks style",
                                               "a yellow triangle in sks style"]
    assert specs[3].prompt == "a red circle" and {(sp.width, sp.cfg) for sp in specs} == {(64, SD_TINY_GUIDANCE)}


def test_the_grid_images_the_measurements_reuse_are_what_they_would_draw(demo_run):
    """The measurements score the grid's images instead of drawing them again (demo.grid_images): the
    grid's base column must be the image the measurement's own sampler gives for that prompt and seed."""
    from sdlora.generate.job import load_model
    from sdlora.tiny.quality import as_pipeline, generate

    out, s = demo_run.result.output, demo_run.settings
    summary = json.loads((out / "compare.json").read_text())
    rows = summary["rows"][:2]
    drawn = generate(as_pipeline(load_model("tiny", "fp32")), [r["prompt"] for r in rows], [r["seed"] for r in rows],
                     steps=s.sample_steps, guidance=s.guidance)
    for image, paths in zip(drawn, summary["images"]):
        grid = np.asarray(Image.open(out / paths[0]), dtype=np.float32) / 255.0
        assert np.abs(grid - image).max() <= 1 / 255  # PNG rounding only
