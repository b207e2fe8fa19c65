"""`sdlora generate` end to end through the CLI on the tiny model (2 steps, 32 px)."""
import numpy as np
from PIL import Image

from sdlora.cli import main
from sdlora.generate.pngmeta import parse_pairs, read_parameters

FAST = ["--steps", "2", "--width", "32", "--height", "32", "--cfg", "4"]


def test_generate_with_prompt_file_loras_and_merge(tmp_path, tiny_model, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# test prompts\na red circle --n blurry --d 7\na blue square --ss euler_a --w 40\n")
    out = tmp_path / "out"
    args = ["generate", "--model", str(tiny_model["model"]), "--prompts", str(prompts), "--prompt", "a cat --d 3",
            "--lora", f"{tiny_model['style']}:0.6", "--lora", str(tiny_model["subject"]), "--dtype", "fp32",
            "--device", "cpu", *FAST]
    assert main([*args, "--num-images", "2", "--batch-size", "2", "--out", str(out)]) == 0
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

    merged = tmp_path / "merged"
    assert main([*args, "--out", str(merged), "--merge", "--no-contact-sheet"]) == 0
    assert not (merged / "contact_sheet.png").exists()
    a = np.asarray(Image.open(out / "00000-3-a_cat.png"), np.int16)
    b = np.asarray(Image.open(merged / "00000-3-a_cat.png"), np.int16)
    assert np.abs(a - b).max() <= 1


def test_user_mistakes_are_one_line_errors(tmp_path, tiny_model, capsys):
    base = ["generate", "--model", str(tiny_model["model"]), "--out", str(tmp_path), *FAST]
    cases = [
        (["--prompt", "a cat --w 30"], "width 30 is not a positive multiple of 8"),
        (["--width", "100", "--prompt", "a cat"], "command line: width 100"),
        (["--prompt", "a cat", "--lora", str(tmp_path / "missing.safetensors")], "missing.safetensors: file not found"),
        ([], "no prompts"),
        (["--prompts", str(tmp_path / "nope.txt")], "nope.txt: prompt file not found"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith("sdlora: error: ") and message in last and "Traceback" not in err, err
