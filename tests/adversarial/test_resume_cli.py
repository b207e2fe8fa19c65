"""Resuming the way a user does it: the same `sdlora train` command again with --resume.

It must continue exactly (bitwise equal to an uninterrupted run, constant LR schedule); a setting that
cannot change is refused naming it with the old and the new value, and a refused resume changes
nothing in the run folder; a finished, missing or unnamed run gets a one-line message saying what to do."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sdlora.cli import main
from sdlora.train.checkpoint import find_checkpoints, load_state

FAST = ["--resolution", "32", "--batch-size", "2", "--rank", "2", "--preset", "unet-attn", "--mixed-precision", "no",
        "--set", "data.bucket_step=32", "--set", "data.min_bucket_side=32", "--set", "data.num_workers=0",
        "--set", "save.every_n_epochs=0", "--set", "log.tensorboard=false"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """A tiny random SD model as a diffusers folder, and four captioned 32 px images."""
    root = tmp_path_factory.mktemp("resume-cli")
    (root / "model").symlink_to(tiny_model_dir, target_is_directory=True)
    (root / "ds").mkdir()
    for i in range(4):
        pixels = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "ds" / f"img{i}.png")
        (root / "ds" / f"img{i}.txt").write_text(f"picture {i}")
    return root


def command(world, out, *extra) -> list[str]:
    return ["train", "--model", str(world / "model"), "--data", str(world / "ds"), "--output", str(out), *FAST, *extra]


def snapshot(folder) -> dict:
    """Every file under `folder` with its content hash and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdlora: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def three_steps(world):
    """The first 3 steps; one thread like every test (a module fixture runs before the suite's
    per-test thread setting, and another thread count sums in another order: not bitwise)."""
    out, threads = world / "parted", torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(command(world, out, "--steps", "3")) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("extra, message", [
    (["--rank", "8"], "lora.rank cannot change when resuming (the run has 2, this command gives 8)"),
    (["--seed", "7"], "train.seed cannot change when resuming (the run has 42, this command gives 7)"),
    (["--lr", "0.001"], "train.lr cannot change"),
    (["--data", "{world}/model"], "data.sources cannot change"),
    (["--batch-size", "1"], "train.batch_size cannot change"),
])
def test_a_refused_resume_changes_nothing_in_the_run_folder(world, three_steps, capsys, extra, message):
    before = snapshot(three_steps)
    extra = [e.format(world=world) for e in extra]
    err = one_line_error(capsys, command(world, three_steps, "--steps", "6", "--resume", "latest", *extra))
    assert message in err
    assert snapshot(three_steps) == before


def test_the_same_command_with_resume_continues_bitwise(world, three_steps, capsys):
    """3 steps, then the same command with --steps 6 --resume latest == 6 steps straight."""
    assert main(command(world, three_steps, "--steps", "6", "--resume", "latest")) == 0
    straight = world / "straight"
    assert main(command(world, straight, "--steps", "6")) == 0
    a = load_state(find_checkpoints(straight)[-1])["lora"]
    b = load_state(find_checkpoints(three_steps)[-1])["lora"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # fp32, bitwise
    fa, fb = load_file(straight / "straight.safetensors"), load_file(three_steps / "parted.safetensors")
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)
    log = (three_steps / "train.log").read_text()
    assert "dataset: 4 images" in log and "dataset: 8 images" not in log  # --data was not added twice

    before = snapshot(three_steps)  # and now it is complete: say so, and how to extend it
    err = one_line_error(capsys, command(world, three_steps, "--steps", "6", "--resume", "latest"))
    assert "is complete (6 steps done, train.steps = 6)" in err and "pass a larger --steps" in err
    assert snapshot(three_steps) == before


def test_resume_of_nothing_says_what_is_missing(world, capsys, tmp_path):
    err = one_line_error(capsys, ["train", "--resume", str(tmp_path / "nowhere")])
    assert "nowhere does not exist" in err
    err = one_line_error(capsys, ["train", "--resume", "latest", "--data", str(world / "ds")])
    assert "--resume latest needs --output" in err
    err = one_line_error(capsys, command(world, tmp_path / "absent", "--resume", "latest"))
    assert "absent does not exist" in err
