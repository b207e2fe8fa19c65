"""`sdlora generate` end to end through the CLI on the tiny model (2 steps, 32 px)."""
import logging

import numpy as np
import pytest
from PIL import Image

from sdlora.cli import main
from sdlora.generate.pngmeta import parse_pairs, read_parameters

FAST = ["--sample-steps", "2", "--width", "32", "--height", "32", "--guidance", "4"]


def run(argv: list[str]) -> int:
    """main()'s exit status, also for errors found while parsing (argparse exits)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_generate_with_prompt_file_loras_and_merge(tmp_path, tiny_model, capsys, caplog):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# test prompts\na red circle --n blurry --d 7\na blue square --ss euler_a --w 40\n")
    out = tmp_path / "out"
    args = ["generate", "--model", str(tiny_model["model"]), "--prompts", str(prompts), "--prompt", "a cat --d 3",
            "--lora", f"{tiny_model['style']}:0.6", "--lora", str(tiny_model["subject"]), "--dtype", "fp32",
            "--device", "cpu", *FAST]
    with caplog.at_level(logging.INFO):
        assert main([*args, "--num-images", "2", "--batch-size", "2", "--out", str(out)]) == 0
    assert "'a blue square' is sampled at 40x32: its own --w/--h override the command line's 32x32" in caplog.messages
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["00000-3-a_cat.png", "00001-4-a_cat.png", "00002-7-a_red_circle.png",
                     "00003-8-a_red_circle.png", "00004-42-a_blue_square.png", "00005-43-a_blue_square.png",
                     "contact_sheet.png"]
    params = read_parameters(out / "00002-7-a_red_circle.png")
    assert params.prompt == "a red circle" and params.negative_prompt == "blurry"
    assert params.fields["Model"] == "model" and params.fields["Steps"] == "2"
    assert parse_pairs(params.fields["Lora weights"]) == {"style": "0.6", "subject": "1.0"}
    assert read_parameters(out / "00004-42-a_blue_square.png").fields["Sampler"] == "Euler a"
    assert "6 images in" in capsys.readouterr().out

    # the same --output again: the first run's images stay, the second run goes to out-2
    assert main([*args, "--output", str(out), "--merge", "--no-contact-sheet"]) == 0
    merged = tmp_path / "out-2"
    assert len(list(out.glob("*.png"))) == 7 and not (merged / "contact_sheet.png").exists()
    assert f"images in {merged}" in capsys.readouterr().out
    a = np.asarray(Image.open(out / "00000-3-a_cat.png"), np.int16)
    b = np.asarray(Image.open(merged / "00000-3-a_cat.png"), np.int16)
    assert np.abs(a - b).max() <= 1


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "file.png").write_bytes(b"")
    base = ["generate", "--model", str(tmp_path / "no-model"), "--output", str(tmp_path / "out"), *FAST]
    cases = [
        (["--prompt", "a cat --w 30"], "width 30 is not a positive multiple of 8"),
        (["--width", "100", "--prompt", "a cat"], "command line: width 100"),
        (["--prompt", "a cat", "--lora", str(tmp_path / "missing.safetensors")], "missing.safetensors: file not found"),
        ([], "no prompts"),
        (["--prompts", str(tmp_path / "nope.txt")], "nope.txt: file not found"),
        (["--prompts", str(tmp_path)], "is a folder"),
        (["--prompt", "a cat", "--seed", "99999999999999999999"], "--seed: must be from 0 to 4294967295"),
        (["--prompt", "a cat --d 4294967295", "--num-images", "2"], "seed must be from 0 to 4294967295, got 4294967296"),
        (["--prompt", "a cat", "--output", str(tmp_path / "file.png")], "file.png: is a file"),
        (["--prompt", "a cat", "--lora", f"{tmp_path / 'file.png'}:nan"], "weight must be a finite number"),
        (["--prompt", "a cat", "--lora", str(tmp_path)], "is a folder"),
    ]
    for extra, message in cases:
        assert run(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("sdlora: error: ") and message in err, err
    assert not (tmp_path / "out").exists()  # every mistake was found before any work


def test_noise_flags(tmp_path, tiny_model, capsys):
    from sdlora.cli import build_parser
    from sdlora.cli.generate import noise_settings
    from sdlora.generate.prediction import NoiseSettings

    parse = build_parser().parse_args
    assert noise_settings(parse(["generate"])) == NoiseSettings()  # auto: the LoRA files decide
    given = parse(["generate", "--prediction-type", "v_prediction", "--zero-terminal-snr", "off",
                   "--timestep-spacing", "trailing"])
    assert noise_settings(given) == NoiseSettings("v_prediction", False, "trailing")
    argv = ["generate", "--model", str(tiny_model["model"]), "--prompt", "a cat", "--zero-terminal-snr", "on",
            "--device", "cpu", "--output", str(tmp_path / "out"), *FAST]
    assert run(argv) == 2  # the default PLMS sampler cannot: said before any image
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'pndm' cannot sample a model trained with zero terminal SNR" in err
    assert not list((tmp_path / "out").glob("*.png"))
