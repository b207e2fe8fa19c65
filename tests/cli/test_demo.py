from pathlib import Path

import pytest

from sdlora.cli import build_parser, main
from sdlora.cli.demo import settings
from sdlora.tiny.demo import DemoSettings


def test_flags_map_onto_demo_settings():
    args = build_parser().parse_args(["demo", "--output", "out/x", "--steps", "5", "--rank", "4", "--lr", "1e-3",
                                      "--eval-prompts", "8", "--grid-prompts", "1", "--threads", "1", "--no-conv",
                                      "--set", "lora.alpha=2", "--set", "train.seed=3"])
    s = settings(args)
    assert s == DemoSettings(output=Path("out/x"), steps=5, rank=4, lr=1e-3, eval_prompts=8, grid_prompts=1,
                             threads=1, conv=False, sets=["lora.alpha=2", "train.seed=3"])


def test_defaults_are_the_library_defaults():
    assert settings(build_parser().parse_args(["demo"])) == DemoSettings()


def test_help_lists_the_outputs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "metrics.json" in text and "report.html" in text and "--steps" in text


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "out"), "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "sdlora: error: demo: --steps must be at least 1, got 0"
    assert not (tmp_path / "out").exists()


def test_task_flags_map_onto_demo_settings():
    args = build_parser().parse_args(["demo", "--task", "subject", "--class-images", "12", "--no-prior"])
    assert settings(args) == DemoSettings(task="subject", class_images=12, prior=False)
    assert settings(build_parser().parse_args(["demo", "--task", "all"])).task == "all"


def test_an_unknown_task_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--task", "portrait"])
    assert exc.value.code == 2 and "art-style" in capsys.readouterr().err


def test_all_checks_the_flags_before_any_work(tmp_path, capsys):
    assert main(["demo", "--task", "all", "--output", str(tmp_path / "out"), "--eval-prompts", "0"]) == 2
    assert "--eval-prompts must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
