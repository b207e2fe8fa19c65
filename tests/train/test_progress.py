import logging
import math

import pytest
from PIL import Image

from sdlora.train.progress import LOG_FILE, Progress, SmoothedValue


def test_smoothed_value_is_bias_corrected_and_skips_nan():
    s = SmoothedValue(0.9)
    assert math.isnan(s.value)
    assert s.update(2.0) == pytest.approx(2.0)  # first value is not pulled towards 0
    s.update(float("nan"))
    assert s.value == pytest.approx(2.0)
    s.update(4.0)
    assert 2.0 < s.value < 4.0


def test_progress_writes_log_and_tensorboard(tmp_path):
    p = Progress(tmp_path, enabled=True, tensorboard=True, every=2)
    p.start(4)
    for step in range(1, 5):
        p.step(step, 1.0 / step, 1e-4, 0.5, skipped=step == 3)
    p.message("hello")
    p.image("samples", Image.new("RGB", (8, 8)), 4)
    p.close()
    text = (tmp_path / LOG_FILE).read_text()
    assert "step 2: loss" in text and "step 4: loss" in text and "step 1: loss" not in text
    assert "step 3: loss" in text and "[skipped: non-finite]" in text and "hello" in text
    events = list((tmp_path / "logs").glob("events.out.tfevents*"))
    assert events and events[0].stat().st_size > 0
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("sdlora").handlers)


def test_disabled_progress_writes_nothing(tmp_path):
    p = Progress(tmp_path, enabled=False)
    p.start(2)
    p.step(1, 1.0, 1e-4, None, False)
    p.message("x")
    p.close()
    assert list(tmp_path.iterdir()) == []
