import os
import signal

import pytest
import torch

from sdlora.config import RunConfig
from sdlora.train.guard import NonFiniteGuard, StopRequest, TrainingDiverged, is_oom, oom_message


def test_guard_counts_consecutive_and_resets():
    guard = NonFiniteGuard(3, "no")
    for step, skipped in enumerate([True, True, False, True, True], 1):
        guard.update(skipped, step)
    assert guard.consecutive == 2 and guard.total == 4
    with pytest.raises(TrainingDiverged, match="stopped at step 6: 3 consecutive steps.*lower train.lr"):
        guard.update(True, 6)
    restored = NonFiniteGuard(3, "no")
    restored.load_state_dict(guard.state_dict())
    assert (restored.consecutive, restored.total) == (3, 5)


def test_fp16_hint_and_disabled_limit():
    with pytest.raises(TrainingDiverged, match=r"fp16 overflow: try train.mixed_precision = \"bf16\""):
        NonFiniteGuard(1, "fp16").update(True, 1)
    unlimited = NonFiniteGuard(0, "no")
    for step in range(50):
        unlimited.update(True, step)
    assert unlimited.total == 50


def test_oom_message_lists_only_useful_settings():
    cfg = RunConfig()
    cfg.train.batch_size = 4
    text = oom_message(cfg, "no")
    for tip in ("train.batch_size (now 4", "gradient_checkpointing = true", "mixed_precision", "data.resolution (now 512)"):
        assert tip in text
    assert "cache_latents" not in text  # already cached by default
    cfg.train.batch_size, cfg.train.gradient_checkpointing, cfg.data.resolution = 1, True, 256
    assert oom_message(cfg, "bf16") == "CUDA out of memory; try a GPU with more memory"
    assert is_oom(torch.OutOfMemoryError("x")) and not is_oom(RuntimeError("x"))


def test_ctrl_c_sets_a_flag_and_a_second_one_interrupts():
    previous = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is previous
