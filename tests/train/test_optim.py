import importlib.util
import math

import pytest
import torch
from diffusers.optimization import get_scheduler
from torch import nn

from sdlora.config import TrainConfig
from sdlora.errors import SdloraError
from sdlora.lora import inject, mark_only_lora_trainable
from sdlora.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups


def _model():
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    inject(model, ["0", "1"], rank=2)
    mark_only_lora_trainable(model)
    return model


def test_groups_split_components_and_loraplus():
    unet, te = _model(), _model()
    cfg = TrainConfig(lr=1e-4, text_encoder_lr=5e-5, loraplus_ratio=16)
    groups = param_groups({"unet": unet, "text_encoder": te}, cfg)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"unet", "unet.up", "text_encoder", "text_encoder.up"}
    assert by_name["unet.up"]["lr"] == pytest.approx(16e-4) and by_name["text_encoder.up"]["lr"] == pytest.approx(8e-4)
    ups = {id(m.adapters["default"].up.weight) for m in (unet[0], unet[1])}
    assert {id(p) for p in by_name["unet.up"]["params"]} == ups
    assert len(by_name["unet"]["params"]) == 2  # the two down weights
    plain = param_groups({"unet": unet}, TrainConfig())
    assert [g["name"] for g in plain] == ["unet"] and len(plain[0]["params"]) == 4


def test_nothing_trainable_is_an_error():
    with pytest.raises(SdloraError, match="nothing to train"):
        param_groups({"unet": nn.Linear(2, 2).requires_grad_(False)}, TrainConfig())


@pytest.mark.parametrize("name, module, extra", [("adamw8bit", "bitsandbytes", "bnb"), ("prodigy", "prodigyopt", "prodigy")])
def test_missing_optional_optimizer_names_the_pip_extra(name, module, extra):
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here")
    groups = param_groups({"unet": _model()}, TrainConfig(lr=1.0))
    with pytest.raises(SdloraError, match=rf"pip install 'sdlora\[{extra}\]'"):
        build_optimizer(groups, TrainConfig(optimizer=name, lr=1.0))


def test_adamw_keeps_group_rates():
    groups = param_groups({"unet": _model()}, TrainConfig(lr=3e-4, loraplus_ratio=2))
    opt = build_optimizer(groups, TrainConfig(lr=3e-4, weight_decay=0.5))
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([3e-4, 6e-4])
    assert all(g["weight_decay"] == 0.5 for g in opt.param_groups)


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine", "cosine_with_restarts"])
def test_schedules_after_warmup_match_diffusers(kind):
    total = 20
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = get_scheduler(kind, opt, num_warmup_steps=0, num_training_steps=total, num_cycles=2) \
        if kind == "cosine_with_restarts" else get_scheduler(kind, opt, num_warmup_steps=0, num_training_steps=total)
    expected = [ref.lr_lambdas[0](s) for s in range(total)]
    ours = [lr_factor(s, kind=kind, total=total, cycles=2) for s in range(total)]
    assert ours == pytest.approx(expected, abs=1e-9)


def test_warmup_is_linear_and_never_zero():
    values = [lr_factor(s, kind="cosine", total=10, warmup=4) for s in range(10)]
    assert values[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8]) and values[4] == 1.0
    assert values[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 6)))
    with pytest.raises(SdloraError, match="lr_scheduler"):
        lr_factor(0, kind="step", total=10)


def test_scheduler_state_round_trip():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = TrainConfig(lr_scheduler="linear", warmup_steps=2)
    sched = build_scheduler(opt, cfg, 10)
    for _ in range(5):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = build_scheduler(opt2, cfg, 10)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert sched.get_last_lr() == sched2.get_last_lr()
