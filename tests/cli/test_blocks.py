"""`sdlora bake-block-weights` on the command line: the file it writes and its one-line errors."""
import pytest
import torch

from sdlora.cli import main
from sdlora.formats import apply, save_lora_file
from sdlora.formats.io import load_lora_file
from sdlora.lora import inject
from sdlora.models import tiny_components


@pytest.fixture(scope="module")
def lora_file(tmp_path_factory):
    model = tiny_components(0)
    inject(model.unet, "unet-attn", rank=2, init="gaussian")
    inject(model.text_encoder, "text-encoder", rank=2, init="gaussian")
    path = tmp_path_factory.mktemp("bake") / "style.safetensors"
    return save_lora_file(path, apply.extract(model), {}, "kohya", torch.float32)


def test_bake_writes_the_kept_modules(lora_file, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    assert main(["bake-block-weights", str(lora_file), str(out), "--lbw", "INALL", "--to", "native"]) == 0
    printed = capsys.readouterr().out
    assert "baked INALL" in printed and "dropped" in printed and str(out) in printed
    lora, meta, fmt = load_lora_file(out)
    assert fmt == "native" and meta["sdlora_lbw"] == "INALL"
    assert not any(".up_blocks." in k or ".mid_block." in k for k in lora) and any(".down_blocks." in k for k in lora)


@pytest.mark.parametrize("lbw, message", [("UPPER", "unknown block-weight preset"), ("1,2", "got 2"),
                                          (",".join(["nan"] * 17), "finite")])
def test_bad_block_weights_are_one_line_errors(lora_file, tmp_path, capsys, lbw, message):
    assert main(["bake-block-weights", str(lora_file), str(tmp_path / "o.safetensors"), "--lbw", lbw]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdlora: error: --lbw: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "o.safetensors").exists()


def test_merge_into_model_refuses_block_weights(lora_file, tmp_path, capsys):
    assert main(["merge-into-model", "tiny", f"{lora_file}:lbw=OUTALL", str(tmp_path / "m.safetensors")]) == 2
    assert "bake-block-weights" in capsys.readouterr().err


def test_an_existing_output_needs_overwrite(lora_file, tmp_path, capsys):
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"keep me")
    assert main(["bake-block-weights", str(lora_file), str(out), "--lbw", "ALL"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["bake-block-weights", str(lora_file), str(out), "--lbw", "ALL", "--overwrite"]) == 0
    assert load_lora_file(out)[1]["sdlora_lbw"] == "ALL"
