"""Hostile and broken LoRA files against every command that reads one (info, convert, resize, the
loader under generate and merge): each ends in one `sdlora: error:` line naming the file, rc 2, no
traceback and no output file. And alpha 0 is read by the one rule everywhere (missing or 0 = rank)."""
import json
import os

import pytest
import torch
from safetensors.torch import save_file

from sdlora.cli import main
from sdlora.errors import SdloraError
from sdlora.formats import canonical as C
from sdlora.formats.io import load_lora_file
from sdlora.formats.peft_config import METADATA_KEY
from sdlora.formats.resize import resize_lora_file

Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
CANONICAL_Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"


def kohya(rank=4, alpha=0.0, **change) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state = {f"{Q}.lora_down.weight": torch.randn(rank, 320, generator=gen),
             f"{Q}.lora_up.weight": torch.randn(320, rank, generator=gen),
             f"{Q}.alpha": torch.as_tensor(alpha, dtype=torch.float32)}
    return {**state, **{f"{Q}.{k}": v for k, v in change.items()}}


def _nan_up():
    state = kohya()
    state[f"{Q}.lora_up.weight"][3, 1] = float("nan")
    return state


BROKEN = {  # name -> (what to write, message)
    "rank0": (kohya(rank=0), "rank 0"),
    "nan": (_nan_up(), "lora_up.weight holds NaN or infinite values"),
    "inf-alpha": (kohya(alpha=float("inf")), "alpha holds NaN or infinite values"),
    "negative-alpha": (kohya(alpha=-2.0), "alpha -2 is not a positive number"),
    "vector-alpha": (kohya(alpha=torch.ones(3)), "alpha must be a single number"),
    "rank-mismatch": (kohya(**{"lora_up.weight": torch.ones(320, 3)}), "does not match the rank"),
    "unknown-key": ({**kohya(), "lora_unet_nowhere.lora_up.weight": torch.ones(1, 1)}, "name no SD 1.x module"),
    "empty": ({}, "holds no tensors"),
}
SPECIAL = ["fifo", "dev-zero", "folder", "garbage", "truncated", "redos"]
REDOS = {"unet.r": 4, "unet.lora_alpha": 4, "unet.alpha_pattern": {"([^!]+)+!": 1}}


def run(argv) -> int:
    """The CLI's exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def write(tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    if name in BROKEN:
        save_file(BROKEN[name][0], path)
    elif name == "fifo":
        os.mkfifo(path)
    elif name == "dev-zero":
        path.symlink_to("/dev/zero")
    elif name == "folder":
        path.mkdir()
    elif name == "garbage":
        path.write_bytes(b"\xff" * 64)
    elif name == "redos":  # a diffusers file whose PEFT config holds a catastrophically backtracking regex
        state = {f"{CANONICAL_Q}.lora_A.weight": torch.ones(4, 320), f"{CANONICAL_Q}.lora_B.weight": torch.ones(320, 4)}
        save_file(state, path, metadata={METADATA_KEY: json.dumps(REDOS)})
    else:
        save_file(kohya(), path)
        path.write_bytes(path.read_bytes()[:200])
    return path


@pytest.mark.parametrize("name", [*BROKEN, *SPECIAL])
def test_the_loader_refuses_with_one_line_naming_the_file(tmp_path, name):
    path = write(tmp_path, name)
    with pytest.raises(SdloraError) as info:
        load_lora_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and message.count(str(path)) == 1 and "\n" not in message
    if name in BROKEN:
        assert BROKEN[name][1] in message


@pytest.mark.parametrize("command", [["info"], ["convert", "--to", "diffusers"], ["resize", "--rank", "1"]])
@pytest.mark.parametrize("name", ["rank0", "nan", "negative-alpha", "fifo", "garbage", "redos"])
def test_every_command_gives_one_error_line(tmp_path, capsys, command, name):
    path, out = write(tmp_path, name), tmp_path / "out.safetensors"
    argv = [command[0], str(path)] + ([str(out)] if command[0] != "info" else []) + command[1:]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdlora: error:") and path.name in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_resize_of_an_alpha_zero_file_reads_alpha_as_rank(tmp_path):
    src = tmp_path / "a0.safetensors"
    save_file(kohya(rank=4, alpha=0.0), src)
    report = resize_lora_file(src, tmp_path / "r.safetensors", 2)
    lora, _, _ = load_lora_file(tmp_path / "r.safetensors")
    assert all(torch.isfinite(t).all() for t in lora.values())
    assert 0 < report.energy < 1  # a random rank-4 delta cut to rank 2 loses energy; was NaN read as 100%
    params = {p: lora[f"{CANONICAL_Q}.{p}"].float() for p in (C.DOWN, C.UP, C.ALPHA)}
    state = kohya(rank=4)
    full = state[f"{Q}.lora_up.weight"] @ state[f"{Q}.lora_down.weight"]  # scale alpha/rank = 1
    s = torch.linalg.svdvals(full.double())
    best = float(s[2:].pow(2).sum().sqrt())  # Eckart-Young: the error of the best rank-2 fit
    assert abs(float((C.delta(params) - full).norm()) - best) < 1e-3 * best


@pytest.mark.parametrize("stored", [0.0, None])
def test_convert_of_an_alpha_zero_or_missing_file_writes_alpha_equal_rank(tmp_path, stored):
    state = kohya(rank=4, alpha=0.0)
    if stored is None:
        del state[f"{Q}.alpha"]
    save_file(state, tmp_path / "a0.safetensors")
    src, dst = tmp_path / "a0.safetensors", tmp_path / "d.safetensors"
    assert main(["convert", str(src), str(dst), "--to", "diffusers"]) == 0
    _, metadata, fmt = load_lora_file(tmp_path / "d.safetensors")
    config = json.loads(metadata[METADATA_KEY])
    assert fmt == "diffusers" and config["unet.lora_alpha"] == 4.0 and config["unet.r"] == 4
