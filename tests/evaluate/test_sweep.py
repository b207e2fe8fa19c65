"""X/Y sweeps in `compare`: parsing, the columns each kind makes, and whole grids on the tiny model."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sdlora.cli import main
from sdlora.errors import SdloraError
from sdlora.evaluate.compare import CompareJob, compare
from sdlora.evaluate.sweep import parse_sweep, run_files, sweep_columns
from sdlora.generate.blocks import parse_lbw
from sdlora.generate.loras import LoadedLora, LoraSpec
from sdlora.generate.pngmeta import read_parameters
from sdlora.generate.prompts import PromptSpec
from sdlora.models import tiny_components

PROMPT = PromptSpec("a red square", seed=7, steps=2, cfg=4.0, width=32, height=32)
FAST = ["--sample-steps", "2", "--width", "32", "--height", "32", "--guidance", "4", "--device", "cpu"]


@pytest.fixture
def run_dir(tmp_path, lora_file):
    """A training run's folder: two checkpoints (written out of order) and the final file, plus a
    second-format copy that must not become a column."""
    run = tmp_path / "runs" / "me"
    for step in (1000, 500):
        (run / "checkpoints" / f"step-{step:06d}").mkdir(parents=True)
        shutil.copy(lora_file, run / "checkpoints" / f"step-{step:06d}" / f"me-{step:06d}.safetensors")
    shutil.copy(lora_file, run / "me.safetensors")
    shutil.copy(lora_file, run / "me.diffusers.safetensors")
    return run


def test_parse_sweep_kinds():
    assert parse_sweep("weight=0,0.4,1").values == (0.0, 0.4, 1.0)
    assert parse_sweep("cfg=4,7.5").values == (4.0, 7.5)
    assert parse_sweep("sampler=euler_a,ddim").values == ("euler_a", "ddim")
    assert parse_sweep("lbw=OUTALL,ins").values == (parse_lbw("OUTALL"), parse_lbw("INS"))
    vectors = parse_sweep("lbw=" + ";".join([",".join(["1"] * 17), ",".join(["0.5"] * 26)])).values
    assert vectors == (parse_lbw("ALL"), (0.5,) * 26)
    assert parse_sweep("lora=a.safetensors:0.5,b.safetensors").values == (LoraSpec(Path("a.safetensors"), 0.5),
                                                                           LoraSpec(Path("b.safetensors")))


@pytest.mark.parametrize("text, message", [
    ("size=1,2", "KIND one of weight, checkpoint, lora, lbw, sampler, cfg"),
    ("weight", "expected KIND=VALUES"),
    ("weight=", "no values"),
    ("weight=0,x", "'x' is not a number"),
    ("weight=0,nan", "finite numbers >= 0"),
    ("cfg=-1", "finite numbers >= 0"),
    ("sampler=euler_a,warp", "unknown sampler 'warp'"),
    ("lbw=OUTALL,SIDEWAYS", "unknown block-weight preset 'SIDEWAYS'"),
    ("lbw=1,0;1,1", "got 2"),
    ("checkpoint=/no/such/run", "is not a folder"),
])
def test_bad_sweeps_are_one_line_errors(text, message):
    with pytest.raises(SdloraError, match=message) as err:
        parse_sweep(text)
    assert str(err.value).startswith(f"--sweep {text}") and "\n" not in str(err.value)


def test_run_files_are_the_checkpoints_in_step_order_then_the_final_file(run_dir, tmp_path):
    assert [p.relative_to(run_dir).as_posix() for p in run_files(run_dir)] == [
        "checkpoints/step-000500/me-000500.safetensors", "checkpoints/step-001000/me-001000.safetensors",
        "me.safetensors"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SdloraError, match="holds no LoRA files"):
        run_files(tmp_path / "empty")


def test_value_sweeps_keep_the_loras_at_their_weights():
    loaded = [LoadedLora(LoraSpec(Path("style.safetensors"), 0.8, parse_lbw("INS")), "style")]
    columns = sweep_columns(parse_sweep("sampler=ddim,euler"), loaded)
    assert [c.label for c in columns] == ["base", "ddim", "euler"]
    assert columns[0].weights == {"style": 0.0} and columns[1].weights == {"style": 0.8}
    assert columns[2].settings == {"scheduler": "euler"} and columns[2].lbw == {"style": parse_lbw("INS")}
    assert [c.label for c in sweep_columns(parse_sweep("cfg=3"), [])] == ["base", "cfg 3"]
    lbw = sweep_columns(parse_sweep("lbw=NONE,OUTALL"), loaded)
    assert [c.label for c in lbw] == ["base", "lbw NONE", "lbw OUTALL"] and lbw[2].lbw == {"style": parse_lbw("OUTALL")}


def test_checkpoint_sweep_grid(run_dir, tmp_path):
    result = compare(CompareJob([PROMPT], [], tmp_path / "out", sweep=parse_sweep(f"checkpoint={run_dir}")),
                     tiny_components(0))
    assert [c.label for c in result.columns] == ["base", "me-000500 @ 1", "me-001000 @ 1", "me @ 1"]
    assert [s.seed for s in result.samples[0]] == [7] * 4
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert data["sweep"] == f"checkpoint={run_dir}" and len(data["images"][0]) == 4
    assert f"X/Y sweep checkpoint={run_dir}" in (tmp_path / "out" / "report.html").read_text()


def test_lbw_sweep_none_is_the_base_image(lora_file, tmp_path):
    job = CompareJob([PROMPT], [LoraSpec(lora_file, 0.9)], tmp_path, sweep=parse_sweep("lbw=NONE,OUTALL"))
    row = compare(job, tiny_components(0)).samples[0]
    pixels = [np.asarray(s.image) for s in row]
    assert np.array_equal(pixels[0], pixels[1]) and not np.array_equal(pixels[0], pixels[2])
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["columns"][2]["lbw"] == {"style": "OUTALL"} and "lbw" not in data["columns"][0]
    fields = [read_parameters(tmp_path / p).fields for p in data["images"][0]]
    assert "Lora block weights" not in fields[0] and fields[2]["Lora block weights"] == "style: OUTALL"


def test_cfg_sweep_through_the_cli(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cfg"
    assert main(["compare", "--model", str(tiny_model_dir), "--prompt", "a blue star", "--sweep", "cfg=1,6",
                 "--out", str(out), *FAST]) == 0
    data = json.loads((out / "compare.json").read_text())
    assert [c["label"] for c in data["columns"]] == ["base", "cfg 1", "cfg 6"]
    assert [read_parameters(out / p).fields["CFG scale"] for p in data["images"][0]] == ["4.0", "1.0", "6.0"]
    assert "grid" in capsys.readouterr().out


def test_several_sweeps_make_one_grid_and_report_each(tiny_model_dir, lora_file, tmp_path, capsys):
    out = tmp_path / "two"
    assert main(["compare", "--model", str(tiny_model_dir), "--prompt", "a blue star", "--lora", str(lora_file),
                 "--sweep", "weight=1", "--sweep", "sampler=ddim", "--out", str(out), *FAST]) == 0
    for folder, labels in (("1-weight", ["base", "style @ 1"]), ("2-sampler", ["base", "ddim"])):
        data = json.loads((out / folder / "compare.json").read_text())
        assert [c["label"] for c in data["columns"]] == labels and (out / folder / "report.html").is_file()
    assert capsys.readouterr().out.count("grid ") == 2


@pytest.mark.parametrize("argv, message", [
    (["--sweep", "steps=1,2"], "--sweep steps=1,2: expected KIND=VALUES"),
    (["--sweep", "weight=0,1", "--weights", "1"], "give one of them"),
    (["--sweep", "weight=0,1"], "give the LoRA to sweep with --lora FILE"),
    ([], "give --lora FILE"),
])
def test_cli_sweep_errors_are_one_line(tiny_model_dir, tmp_path, capsys, argv, message):
    assert main(["compare", "--model", str(tiny_model_dir), "--prompt", "x", "--out", str(tmp_path / "o"),
                 *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_evaluate_takes_one_sweep(tiny_model_dir, tmp_path, capsys):
    assert main(["evaluate", "--model", str(tiny_model_dir), "--prompt", "x", "--sweep", "cfg=1", "--sweep", "cfg=2",
                 "--out", str(tmp_path / "o")]) == 2
    assert "evaluate takes one --sweep" in capsys.readouterr().err
