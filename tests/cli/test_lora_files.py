"""`sdlora convert | info | resize | merge-into-model` end to end on the tiny model."""
import json

import pytest
import torch

from sdlora.cli import main
from sdlora.formats import apply, canonical as C
from sdlora.formats.io import load_lora_file, save_lora_file
from sdlora.lora import inject
from sdlora.models import build_pipeline, load_components, tiny_components


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A rank-4 kohya LoRA (random non-zero up weights) and the tiny base model as a diffusers folder."""
    root = tmp_path_factory.mktemp("cli")
    model = tiny_components(0)
    build_pipeline(model).save_pretrained(root / "base")
    inject(model.unet, ["unet-transformer", "unet-conv"], rank=4, alpha=2.0, init="gaussian")
    inject(model.text_encoder, "text-encoder", rank=4, alpha=2.0, init="gaussian")
    gen = torch.Generator().manual_seed(0)
    for net in (model.unet, model.text_encoder):
        for name, param in net.named_parameters():
            if ".up." in name:
                param.data = torch.randn(param.shape, generator=gen) * 0.1
    lora = apply.extract(model)
    save_lora_file(root / "style.safetensors", lora, {"ss_seed": "1"}, "kohya", torch.float32)
    return root, lora


def test_convert_round_trip_through_the_cli(files, tmp_path, capsys):
    root, lora = files
    assert main(["convert", str(root / "style.safetensors"), str(tmp_path / "d.safetensors"), "--to", "diffusers"]) == 0
    assert main(["convert", str(tmp_path / "d.safetensors"), str(tmp_path / "n.safetensors"), "--to", "native"]) == 0
    assert "(diffusers) ->" in capsys.readouterr().out
    back, meta, fmt = load_lora_file(tmp_path / "n.safetensors")
    assert fmt == "native" and all(torch.equal(back[k], lora[k]) for k in lora) and meta["ss_seed"] == "1"


def test_info_prints_text_and_json(files, capsys):
    root, lora = files
    assert main(["info", str(root / "style.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "format:      kohya" in text and "ranks:   4 x" in text
    assert main(["info", str(root / "style.safetensors"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modules"] == len(C.group(lora)) and info["parameters"] == C.parameter_count(lora)


def test_resize_reports_energy(files, tmp_path, capsys):
    root, _ = files
    out = tmp_path / "small.safetensors"
    assert main(["resize", str(root / "style.safetensors"), "--rank", "2", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "retained energy" in printed and "%" in printed
    small, _, fmt = load_lora_file(out)
    assert fmt == "kohya" and {C.rank(p) for p in C.group(small).values()} == {2}


def test_merge_into_model_writes_a_loadable_model(files, tmp_path, capsys):
    root, lora = files
    out = tmp_path / "merged"
    assert main(["merge-into-model", str(root / "base"), f"{root / 'style.safetensors'}:0.5", str(out)]) == 0
    assert "diffusers layout" in capsys.readouterr().out
    merged, expected = load_components(out), load_components(root / "base")
    apply.attach(expected, lora, multiplier=0.5)
    apply.merge(expected)
    path = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    got = merged.unet.get_submodule(path).weight
    assert torch.allclose(got, expected.unet.get_submodule(path).base.weight, atol=1e-6)


def test_user_errors_are_one_line(files, tmp_path, capsys):
    root, _ = files
    assert main(["info", str(tmp_path / "missing.safetensors")]) == 2
    assert main(["convert", str(root / "style.safetensors"), str(tmp_path / "x.safetensors"), "--to", "kohya",
                 "--dtype", "fp16"]) == 0
    assert main(["merge-into-model", str(root / "base"), str(root / "style.safetensors"), str(tmp_path / "m.ckpt")]) == 2
    err = capsys.readouterr().err
    assert err.count("sdlora: error:") == 2 and "Traceback" not in err


def test_output_into_a_closed_pipe_is_no_traceback(files):
    """`sdlora info FILE | head -1`: the reader goes away; sdlora stops quietly (rc 141 like SIGPIPE)."""
    import subprocess
    import sys

    root, _ = files
    proc = subprocess.Popen([sys.executable, "-m", "sdlora", "info", str(root / "style.safetensors")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before sdlora writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err
