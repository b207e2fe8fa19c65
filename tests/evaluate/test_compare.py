import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.evaluate.compare import (CompareJob, Progress, compare, duration, lora_labels, make_columns, make_rows,
                                     run_compare)
from sdlora.generate.loras import LoadedLora, LoraSpec
from sdlora.generate.pngmeta import parse_pairs, read_parameters
from sdlora.generate.prompts import PromptSpec
from sdlora.generate.sampling import Sampler
from sdlora.models import tiny_components

PROMPTS = [PromptSpec("a red square", seed=1, steps=2, cfg=4.0, width=32, height=32),
           PromptSpec("a green circle", "dark", seed=9, steps=2, cfg=4.0, width=32, height=32)]


def loaded(name, weight=1.0):
    return LoadedLora(LoraSpec(f"{name}.safetensors", weight), name)


@pytest.mark.parametrize("loras, weights, labels", [
    ([], None, ["base"]),
    ([loaded("a", 0.8)], None, ["base", "a @ 0.8"]),
    ([loaded("a"), loaded("b")], [0, 0.5, 1.0], ["base", "a @ 0.5", "a @ 1", "b @ 0.5", "b @ 1"]),
])
def test_columns(loras, weights, labels):
    columns = make_columns(loras, weights)
    assert [c.label for c in columns] == labels
    assert all(set(c.weights) == {item.adapter for item in loras} for c in columns)
    for column in columns[1:]:  # exactly one LoRA on per column, at the column's weight
        assert [a for a, w in column.weights.items() if w] == [column.lora]


def test_rows_are_prompt_by_seed():
    rows = make_rows(PROMPTS, 2)
    assert [(r.spec.prompt, r.seed) for r in rows] == [("a red square", 1), ("a red square", 2),
                                                      ("a green circle", 9), ("a green circle", 10)]


def test_compare_grid_images_report_and_base_column_equals_plain_model(tmp_path, lora_file, caplog):
    job = CompareJob(PROMPTS, [LoraSpec(lora_file)], tmp_path, weights=[0.0, 0.5, 1.0])
    with caplog.at_level(logging.INFO, logger="sdlora.evaluate.compare"):
        result = compare(job, tiny_components(0))
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("image ")]
    assert [line.split(" (")[0] for line in progress] == [f"image {i}/6" for i in range(1, 7)]
    assert "style @ 0.5: a green circle" in progress[3] and "left" in progress[4] and "left" not in progress[5]
    assert [c.label for c in result.columns] == ["base", "style @ 0.5", "style @ 1"]
    assert len(result.samples) == 2 and all(len(row) == 3 for row in result.samples)
    # the base column (LoRA attached, weight 0) is pixel-identical to the model without any LoRA
    plain = Sampler(tiny_components(0))
    for row, spec in zip(result.samples, PROMPTS):
        assert np.array_equal(np.asarray(row[0].image), np.asarray(plain.samples(spec)[0].image))
        assert not np.array_equal(np.asarray(row[0].image), np.asarray(row[2].image))
    params = read_parameters(result.image_paths[1][1])
    assert params.prompt == "a green circle" and params.fields["Seed"] == "9"
    assert parse_pairs(params.fields["Lora weights"]) == {"style": "0.5"}
    with Image.open(result.grid_path) as grid:  # 32 px images are scaled up 8x in the grid
        assert grid.width > 3 * 256 and grid.height > 2 * 256
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["columns"][2] == {"label": "style @ 1", "lora": "style", "weights": {"style": 1.0}}
    assert data["images"][1][2].startswith("images/r01-c02-9-")
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "http" not in html.replace("http-equiv", "")
    assert "a green circle" in html and "ss_network_dim" in html and "(5000 characters)" in html


@pytest.mark.parametrize("flags, said", [({"ss_v_parameterization": "True"}, "v_prediction"),
                                         ({"ss_v_parameterization": "True", "ss_zero_terminal_snr": "True"},
                                          "v_prediction, zero terminal SNR")])
def test_a_lora_trained_for_another_schedule_is_refused(tmp_path, lora_file, flags, said):
    """compare samples every column with the base model's scheduler: a v-prediction / zero-terminal-SNR
    LoRA would come out wrong there without a word, so it is refused (generate samples it correctly)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(lora_file), "pt") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    other = tmp_path / "vpred.safetensors"
    save_file(tensors, str(other), metadata={**metadata, **flags})
    with pytest.raises(SdloraError, match=f"compare: .*vpred.safetensors was trained for {said}.*sdlora generate"):
        run_compare(CompareJob(PROMPTS, [LoraSpec(other)], tmp_path / "out"), tiny_components(0))
    plain = tmp_path / "plain.safetensors"  # the same file saying epsilon / no rescale compares as before
    save_file(tensors, str(plain), metadata={**metadata, "ss_v_parameterization": "False",
                                             "ss_zero_terminal_snr": "False"})
    assert len(run_compare(CompareJob(PROMPTS[:1], [LoraSpec(plain)], tmp_path / "out2"), tiny_components(0)).columns) == 2


def test_negative_weights_are_refused(tmp_path, lora_file):
    with pytest.raises(SdloraError, match="weights must be >= 0"):
        run_compare(CompareJob(PROMPTS, [LoraSpec(lora_file)], tmp_path, weights=[-1.0]), tiny_components(0))


@pytest.mark.parametrize("paths, labels", [
    (["a/style.safetensors"], ["style"]),
    (["run/me.safetensors", "run/other.safetensors"], ["me", "other"]),
    (["runs/me/me.safetensors", "runs/me/checkpoints/step-000500/me.safetensors", "x/y.safetensors"],
     ["me/me", "step-000500/me", "y"]),
])
def test_lora_labels_tell_a_runs_checkpoints_apart(paths, labels):
    assert lora_labels([Path(p) for p in paths]) == labels
    loras = [LoadedLora(LoraSpec(Path(p)), f"adapter{i}") for i, p in enumerate(paths)]
    assert [c.label for c in make_columns(loras, None)[1:]] == [f"{label} @ 1" for label in labels]


def test_progress_counts_images_and_estimates_the_rest():
    assert [duration(s) for s in (4.4, 65, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]
    progress = Progress(total=3)
    lines = [progress.advance(1, "base: a cat"), progress.advance(2, "x @ 1: a dog")]
    assert lines[0].startswith("image 1/3 (base: a cat): ") and ", about " in lines[0] and lines[0].endswith(" left")
    assert lines[1].startswith("image 3/3 (x @ 1: a dog): ") and "left" not in lines[1]
