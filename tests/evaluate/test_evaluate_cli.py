"""`sdlora compare` and `sdlora evaluate` end to end through the CLI on the tiny model."""
import json

import numpy as np
from PIL import Image

from sdlora.cli import main

FAST = ["--sample-steps", "2", "--width", "32", "--height", "32", "--guidance", "4", "--device", "cpu"]


def test_compare_command(tmp_path, tiny_model_dir, lora_file, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "--model", str(tiny_model_dir), "--lora", str(lora_file), "--weights", "0,0.5,1",
                 "--prompt", "a red circle --d 5", "--prompt", "a blue star", "--out", str(out), *FAST]) == 0
    data = json.loads((out / "compare.json").read_text())
    assert [c["label"] for c in data["columns"]] == ["base", "style @ 0.5", "style @ 1"]
    assert [r["seed"] for r in data["rows"]] == [5, 42]
    assert (out / "grid.png").is_file() and (out / "report.html").is_file()
    assert len(list((out / "images").glob("*.png"))) == 6
    assert "grid" in capsys.readouterr().out


def test_compare_requires_a_lora(tmp_path, tiny_model_dir, capsys):
    try:
        main(["compare", "--model", str(tiny_model_dir), "--prompt", "x", "--out", str(tmp_path)])
    except SystemExit as exc:
        assert exc.code == 2
    assert "--lora" in capsys.readouterr().err


def test_evaluate_command_with_and_without_encoders(tmp_path, tiny_model_dir, lora_file, encoder_dirs, capsys):
    train = tmp_path / "train"
    train.mkdir()
    for i in range(2):
        Image.fromarray(np.full((48, 48, 3), 60 * i, np.uint8)).save(train / f"{i}.jpg")
    out = tmp_path / "ev"
    common = ["evaluate", "--model", str(tiny_model_dir), "--lora", f"{lora_file}:0.9", "--prompt", "a red circle",
              "--num-images", "2", "--train-images", str(train), "--reference", str(train), *FAST]
    assert main([*common, "--out", str(out), "--clip-model", str(encoder_dirs["clip"]),
                 "--dino-model", str(encoder_dirs["dino"]), "--fid-features", "clip"]) == 0
    data = json.loads((out / "evaluate.json").read_text())
    assert set(data["metrics"]["columns"]["style @ 0.9"]) == {"CLIP-T", "CLIP-I", "DINO", "DINO vs base", "FD_CLIP",
                                                              "KID_CLIP", "KID_CLIP std"}
    assert data["notes"] == []

    # no encoder at all: stopped before anything is generated, saying how to get them
    bare = tmp_path / "bare"
    assert main([*common, "--out", str(bare), "--clip-model", str(tmp_path / "no-clip"),
                 "--dino-model", "nobody/no-dino"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`hf download nobody/no-dino`" in err and f"--clip-model {tmp_path / 'no-clip'}" in err
    assert not (bare / "images").exists()


def test_the_download_hint_names_an_installed_command():
    import shutil
    import sys
    from pathlib import Path

    from sdlora.evaluate.features import missing_message

    hint = missing_message("DINO", "facebook/dino-vits16", "--dino-model")
    command = hint.split("`")[1].split()[0]
    assert shutil.which(command, path=str(Path(sys.executable).parent)) or shutil.which(command)
