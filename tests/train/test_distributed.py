"""Two CPU processes (gloo DDP) through `accelerate launch -m sdlora train`, then a resume in one process."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sdlora.train import resolve_config, train
from sdlora.train.checkpoint import find_checkpoints

from .conftest import FAST


def _flags(tiny_model, out) -> list[str]:
    settings = {**FAST, "model.name": str(tiny_model), "save.output_dir": str(out), "train.steps": 4,
                "save.every_n_steps": 2}
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={_toml(value)}")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


@pytest.mark.slow
def test_two_process_run_matches_across_processes_and_writes_each_file_once(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "ddp"
    accelerate = Path(sys.executable).with_name("accelerate")
    # --multi_gpu selects torch.distributed's launcher; without CUDA, accelerate uses gloo on the CPU
    # (`--cpu` alone would start one process: multi-CPU needs mpirun in accelerate).
    cmd = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--main_process_port", str(_free_port()),  # not the default 29500: other jobs may hold it
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sdlora", "train",
           "--data", str(tiny_data), *_flags(tiny_model, out)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "train.log").read_text()
    assert "LoRA weights identical on all 2 processes" in log
    assert "4 steps, batch 2 on each of 2 processes" in log  # each process trains its own shard
    for step in (1, 2, 3, 4):  # only the main process logs: every line once
        assert len(re.findall(rf"step {step}: loss", log)) == 1
    assert log.count("checkpoint saved to") == 2 and log.count("done: 4 steps") == 1
    assert [c.step for c in find_checkpoints(out)] == [2, 4]
    assert not list(out.rglob("*.tmp")) and (out / "ddp.safetensors").is_file()
    # the 2-process checkpoint resumes in one process (the data position is converted)
    cfg = resolve_config(None, [], {**FAST, "model.name": str(tiny_model), "save.output_dir": str(out),
                                    "train.steps": 6}, [str(tiny_data)])
    result = train(cfg, resume=str(out / "checkpoints" / "step-000004"))
    assert result.status == "done" and result.step == 6
    assert "resumed from" in (out / "train.log").read_text()
