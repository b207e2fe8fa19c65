"""A run folder under attack: another run holding it, a path that cannot be a folder, the disk full at
a checkpoint (RLIMIT_FSIZE in a subprocess), a state.pt missing keys. Each ends in one line, rc 2,
and the last good checkpoint survives. Outputs get the user's normal permissions."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from sdlora.cli import main
from sdlora.train.checkpoint import STATE_FILE, find_checkpoints, load_state
from sdlora.train.runlock import LOCK_FILE

FAST = ["--resolution", "32", "--batch-size", "2", "--rank", "2", "--preset", "unet-attn", "--mixed-precision", "no",
        "--set", "data.bucket_step=32", "--set", "data.min_bucket_side=32", "--set", "data.num_workers=0",
        "--set", "save.every_n_epochs=0", "--set", "log.tensorboard=false", "--set", "save.every_n_steps=1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """A tiny random SD model (diffusers folder), two 32 px images, and a finished 2-step run in `run`."""
    root = tmp_path_factory.mktemp("run-folder")
    (root / "model").symlink_to(tiny_model_dir, target_is_directory=True)
    (root / "ds").mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(root / "ds" / f"img{i}.png")
    mask = os.umask(0o027)  # a umask other than the usual 022: outputs must follow it
    try:
        assert main(command(root, root / "run", "--steps", "2")) == 0
    finally:
        os.umask(mask)
    return root


def command(root, out, *extra) -> list[str]:
    return ["train", "--model", str(root / "model"), "--data", str(root / "ds"), "--output", str(out), *FAST, *extra]


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdlora: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_outputs_follow_the_umask_not_mkstemp(world):
    run = world / "run"
    newest = find_checkpoints(run)[-1].path
    for path in (run / "config.toml", run / "run.safetensors", newest / STATE_FILE):  # LoRA: the folder name
        assert path.stat().st_mode & 0o777 == 0o640, path  # 0666 & ~027
    assert newest.stat().st_mode & 0o777 == 0o750  # 0777 & ~027, not mkdtemp's 0700


HOLD = f"""
import fcntl, os, sys
os.makedirs(sys.argv[1], exist_ok=True)
fd = os.open(os.path.join(sys.argv[1], "{LOCK_FILE}"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(os.name != "posix", reason="fcntl locks")
def test_a_second_run_on_a_busy_folder_is_refused_before_it_writes(world, capsys, tmp_path):
    out = tmp_path / "busy"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        err = one_line_error(capsys, command(world, out, "--steps", "2"))
        assert f"is in use by another sdlora run (process {proc.pid})" in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]
    finally:
        proc.stdin.close()
        proc.wait()


def unwritable(tmp_path):
    """A folder this process cannot create files in (root ignores permission bits: /proc/1 then)."""
    if os.name == "posix" and os.geteuid() == 0:
        return "/proc/1"
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    return str(folder)


@pytest.mark.parametrize("where", ["under a file", "unwritable"])
def test_an_output_that_cannot_be_written_is_one_line(world, capsys, tmp_path, where):
    (tmp_path / "file").write_text("x")
    parent = tmp_path / "file" if where == "under a file" else unwritable(tmp_path)
    inside = f"{parent}/run"  # --set: past the CLI's own check of --output, to the trainer's
    err = one_line_error(capsys, command(world, tmp_path / "ok", "--steps", "2", "--set", f"save.output_dir='{inside}'"))
    assert f"{inside}: cannot use this run folder" in err


FULL_DISK = """
import resource, signal, sys
import torch
from sdlora.errors import SdloraError
from sdlora.train import checkpoint as ckpt

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
run, limit = sys.argv[1], int(sys.argv[2])
state = ckpt.load_state(ckpt.resolve_resume("latest", run))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
for step in (state["step"] + 1, state["step"]):  # a new checkpoint, then the newest one saved again
    try:
        ckpt.write_checkpoint(run, step, lambda folder: ckpt.atomic_torch_save(folder / ckpt.STATE_FILE, state))
    except SdloraError as exc:
        print(exc)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX rlimits")
def test_disk_full_at_a_checkpoint_keeps_the_last_good_one(world):
    """The run's own checkpoint written again under a file-size limit (`ulimit -f`) smaller than it."""
    run = world / "run"
    good = find_checkpoints(run)[-1]
    before = good.state_path.read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(run), str(len(before) // 2)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and not done.stderr, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2 and all("could not save the checkpoint (File too large)" in line for line in lines)
    assert f"step-{good.step + 1:06d}" in lines[0] and f"step-{good.step:06d}" in lines[1]
    assert [c.step for c in find_checkpoints(run)] == [1, 2]
    assert good.state_path.read_bytes() == before and not list(run.rglob("*.tmp"))


def test_a_state_missing_keys_is_one_line(world, capsys, tmp_path):
    run = world / "run"
    newest = find_checkpoints(run)[-1]
    state = load_state(newest)
    del state["optimizer"]
    torch.save(state, newest.state_path)
    err = one_line_error(capsys, command(world, run, "--steps", "4", "--resume", "latest"))
    assert f"{newest.state_path}: the training state lacks optimizer" in err
