import math
import time

import pytest
import torch

from sdlora.tiny.trainkit import EMA, StageClock, StageOptions, lr_at, set_lr


def test_lr_warms_up_then_decays_to_a_tenth():
    options = StageOptions(steps=1000, batch_size=1, lr=1e-3, warmup=100)
    assert lr_at(options, 0, 0.0) == pytest.approx(1e-5)
    assert lr_at(options, 49, 0.1) == pytest.approx(0.5 * lr_at(options, 99, 0.1))
    assert lr_at(options, 500, 0.5) == pytest.approx(1e-3 * 0.55)
    assert lr_at(options, 999, 1.0) == pytest.approx(1e-4)


def test_clock_stops_on_steps_or_time_whichever_first():
    by_steps = StageClock(StageOptions(steps=10, batch_size=1, lr=1.0))
    assert by_steps.progress(5) == pytest.approx(0.5) and not by_steps.done(9) and by_steps.done(10)
    by_time = StageClock(StageOptions(steps=10**9, batch_size=1, lr=1.0, time_budget=0.05))
    assert not by_time.done(0)
    time.sleep(0.06)
    assert by_time.done(1) and by_time.progress(1) == 1.0
    assert math.isinf(StageOptions(1, 1, 1.0).time_budget)


def test_ema_tracks_parameters_and_copies_back():
    model = torch.nn.Linear(2, 2)
    ema = EMA([model], decay=0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(step=10**6)  # past the ramp: decay 0.5
    ema.copy_to_model()
    assert torch.allclose(model.weight, start + 0.5)


def test_set_lr_sets_every_group():
    opt = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)]},
                           {"params": [torch.zeros(1, requires_grad=True)]}], lr=1.0)
    set_lr(opt, 0.25)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.25]
