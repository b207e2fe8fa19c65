"""Atomic files and checkpoint folders, including a process killed (SIGKILL) in the middle of saves."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.train import checkpoint as ck


def test_atomic_write_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "f.bin"
    ck.atomic_write_bytes(path, b"good")

    def crash(f):
        f.write(b"half")
        raise RuntimeError("simulated crash while writing")

    with pytest.raises(RuntimeError):
        ck.atomic_write(path, crash)
    assert path.read_bytes() == b"good" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def _write_step(value):
    def write(folder):
        ck.atomic_torch_save(folder / ck.STATE_FILE, {"version": ck.STATE_VERSION, "value": value})
    return write


def test_checkpoint_crash_mid_save_keeps_previous_checkpoints(tmp_path):
    ck.write_checkpoint(tmp_path, 1, _write_step(1))

    def crash(folder):
        _write_step(2)(folder)
        raise KeyboardInterrupt  # killed after the state, before the LoRA

    with pytest.raises(KeyboardInterrupt):
        ck.write_checkpoint(tmp_path, 2, crash)
    assert [c.step for c in ck.find_checkpoints(tmp_path)] == [1]
    assert ck.load_state(ck.resolve_resume("latest", tmp_path))["value"] == 1
    assert not list((tmp_path / ck.CHECKPOINTS).glob(".*"))


def test_resave_same_step_replaces_it(tmp_path):
    ck.write_checkpoint(tmp_path, 3, _write_step("a"))
    ck.write_checkpoint(tmp_path, 3, _write_step("b"))
    assert ck.load_state(ck.resolve_resume(str(tmp_path), tmp_path))["value"] == "b"


def test_prune_keeps_last_k_and_leftovers_are_removed(tmp_path):
    for step in (1, 2, 3, 4):
        ck.write_checkpoint(tmp_path, step, _write_step(step))
    leftover = tmp_path / ck.CHECKPOINTS / ".step-000005.abc.tmp"
    leftover.mkdir()
    assert [p.name for p in ck.prune(tmp_path, 2)] == ["step-000001", "step-000002"]
    assert [c.step for c in ck.find_checkpoints(tmp_path)] == [3, 4]
    ck.write_checkpoint(tmp_path, 5, _write_step(5))
    assert not leftover.exists()
    assert ck.prune(tmp_path, 0) == []


def test_resolve_resume_forms_and_errors(tmp_path):
    ck.write_checkpoint(tmp_path, 7, _write_step(7))
    ck.write_checkpoint(tmp_path, 12, _write_step(12))
    assert ck.resolve_resume("latest", tmp_path).step == 12
    assert ck.resolve_resume(str(tmp_path), "elsewhere").step == 12
    assert ck.resolve_resume(str(ck.checkpoint_dir(tmp_path, 7)), tmp_path).step == 7
    with pytest.raises(SdloraError, match=r"--resume latest: the run folder \(--output\) .*missing does not exist"):
        ck.resolve_resume("latest", tmp_path / "missing")
    with pytest.raises(SdloraError, match="--resume .*gone: the folder .*gone does not exist"):
        ck.resolve_resume(str(tmp_path / "gone"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SdloraError, match="no checkpoint with a training state"):
        ck.resolve_resume("latest", tmp_path / "empty")
    ck.checkpoint_dir(tmp_path, 12).joinpath(ck.STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(SdloraError, match="cannot read the training state"):
        ck.load_state(ck.resolve_resume("latest", tmp_path))


KILLER = """
import sys, torch
from sdlora.train import checkpoint as ck
root, i = sys.argv[1], 0
big = torch.arange(2_000_000, dtype=torch.float32)
while True:
    i += 1
    def write(folder, i=i):
        ck.atomic_torch_save(folder / "lora.pt", {"i": i, "w": big + i})
        ck.atomic_torch_save(folder / ck.STATE_FILE, {"version": ck.STATE_VERSION, "i": i, "w": big + i})
    ck.write_checkpoint(root, i % 3, write)
    ck.atomic_torch_save(root + "/final.pt", {"i": i, "w": big + i})
    print(i, flush=True)
"""


def test_sigkill_during_saves_leaves_only_complete_files(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(4):  # let it complete a few saves, then kill it at an arbitrary point
            assert proc.stdout.readline()
        time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    assert torch.equal(final["w"], torch.arange(2_000_000, dtype=torch.float32) + final["i"])
    found = ck.find_checkpoints(tmp_path)
    assert found
    for c in found:  # every visible checkpoint is complete and self-consistent
        state = ck.load_state(c)
        lora = torch.load(c.path / "lora.pt", weights_only=True)
        assert lora["i"] == state["i"] and torch.equal(lora["w"], state["w"])
