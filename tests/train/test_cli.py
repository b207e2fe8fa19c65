"""`sdlora train` flags, config precedence and one-line errors (src/sdlora/cli/train.py, train/entry.py)."""
from __future__ import annotations

import pytest

from sdlora.cli import main
from sdlora.config import to_toml
from sdlora.errors import SdloraError
from sdlora.train.entry import resolve_config


def test_zero_config_flags_fill_the_config():
    cfg = resolve_config(None, [], {"model.name": "m", "save.output_dir": "out", "train.steps": 7, "lora.rank": 8,
                                    "train.lr": 2e-4, "train.batch_size": 3, "data.resolution": 256,
                                    "train.mixed_precision": "bf16", "lora.train_text_encoder": None},
                         ["a", "b"])
    assert (cfg.model.name, cfg.save.output_dir, cfg.train.steps, cfg.lora.rank) == ("m", "out", 7, 8)
    assert (cfg.train.lr, cfg.train.batch_size, cfg.data.resolution) == (2e-4, 3, 256)
    assert [s.path for s in cfg.data.sources] == ["a", "b"]
    assert cfg.train.mixed_precision == "bf16" and cfg.lora.train_text_encoder is False  # None: not given


def test_precedence_file_then_flags_then_set(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nsteps = 100\nlr = 1e-3\n[[data.sources]]\npath = "x"\n')
    cfg = resolve_config(str(toml), ["train.lr=5e-4"], {"train.steps": 9, "train.lr": 2e-3}, ["y"])
    assert cfg.train.steps == 9 and cfg.train.lr == 5e-4
    assert [s.path for s in cfg.data.sources] == ["x", "y"]


def test_resume_reads_the_run_folders_config(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000010").mkdir(parents=True)
    saved = resolve_config(None, [], {"train.steps": 10, "lora.rank": 2, "save.output_dir": str(run)}, ["d"])
    (run / "config.toml").write_text(to_toml(saved))
    for where in (run, run / "checkpoints" / "step-000010"):
        cfg = resolve_config(None, [], {"train.steps": 20}, (), resume=str(where))
        assert cfg.lora.rank == 2 and cfg.train.steps == 20 and cfg.save.output_dir == str(run)


@pytest.mark.parametrize("argv, message", [
    (["--set", "train.lrr=1"], "unknown setting `train.lrr`"),
    (["--set", "train.steps=abc"], "train.steps: expected int"),
    (["--set", "lora.rank=0"], "lora.rank must be >= 1"),
    (["--mixed-precision", "fp64"], "train.mixed_precision: 'fp64' is not one of"),
    ([], "no training images: pass --data"),
    (["--resume", "nowhere"], "--resume nowhere: the run folder nowhere does not exist"),
    (["--resume", "latest"], "--resume latest needs --output"),
    (["--config", "missing.toml"], "missing.toml: config file not found"),
])
def test_user_mistakes_are_one_line_errors(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdlora: error: ") and message in err and "\n" not in err


def test_help_lists_common_flags(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--config", "--set", "--model", "--data", "--output", "--steps", "--rank", "--lr",
                 "--batch-size", "--resolution", "--resume", "--mixed-precision", "--gradient-checkpointing"):
        assert flag in help_text


def test_cli_trains_and_returns_zero(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--model", str(tiny_model), "--data", str(tiny_data), "--output", str(out), "--steps", "2",
            "--rank", "2", "--resolution", "32", "--batch-size", "2", "--preset", "unet-attn",
            "--set", "data.bucket_step=32", "--set", "data.min_bucket_side=32", "--set", "data.num_workers=0",
            "--set", "save.every_n_epochs=0", "--set", "log.tensorboard=false"]
    assert main(argv) == 0
    assert (out / "run.safetensors").is_file() and (out / "config.toml").is_file()  # named after the run


def test_empty_source_path_names_the_key():
    with pytest.raises(SdloraError, match=r"data.sources\[0\].path is required"):
        resolve_config(None, ["data.sources.0.path=''"], {}, ["x"])
