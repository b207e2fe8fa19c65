import copy
import importlib.util
import io
import math
import re

import pytest
import torch
from diffusers.optimization import get_scheduler
from torch import nn

from sdlora.config import TrainConfig, load_config
from sdlora.errors import SdloraError
from sdlora.lora import inject, lora_modules, mark_only_lora_trainable
from sdlora.lora.blocks import block_lr_weights
from sdlora.train.guard import NonFiniteGuard
from sdlora.train.optim import OPTIMIZERS, averaged_weights, build_optimizer, build_scheduler, lr_factor, param_groups
from sdlora.train.state import restore, training_state


def _model(dim: int = 8, rank: int = 2):
    model = nn.Sequential(nn.Linear(dim, dim), nn.Linear(dim, dim))
    inject(model, ["0", "1"], rank=rank)
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


@pytest.mark.parametrize("name, module, extra", [
    ("adamw8bit", "bitsandbytes", "bnb"), ("prodigy", "prodigyopt", "prodigy"), ("lion", "lion_pytorch", "lion"),
    ("adamw_schedulefree", "schedulefree", "schedulefree")])
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


# ----------------------------------------------------------------------------- per-block learning rates

def _sd_named_model():
    """Linears at SD 1.x block paths: IN01, IN04, M00, OUT05 (kohya's block index reads these names)."""
    model = nn.Module()
    model.down_blocks = nn.ModuleList([nn.Module(), nn.Module()])
    model.down_blocks[0].attentions = nn.ModuleList([nn.Linear(4, 4)])
    model.down_blocks[1].resnets = nn.ModuleList([nn.Linear(4, 4)])
    model.mid_block = nn.Module()
    model.mid_block.proj = nn.Linear(4, 4)
    model.up_blocks = nn.ModuleList([nn.Module(), nn.Module()])
    model.up_blocks[1].attentions = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
    paths = ["down_blocks.0.attentions.0", "down_blocks.1.resnets.0", "mid_block.proj", "up_blocks.1.attentions.2"]
    inject(model, paths, rank=2)
    mark_only_lora_trainable(model)
    return model


def test_block_lr_weights_give_each_block_its_group_and_rate():
    model = _sd_named_model()
    weights = block_lr_weights("linear", 0.5, [float(i) for i in range(12)])
    cfg = TrainConfig(lr=1e-3, loraplus_ratio=4)
    groups = {g["name"]: g for g in param_groups({"unet": model}, cfg, weights)}
    assert set(groups) == {f"unet.{b}{s}" for b in ("IN01", "IN04", "M00", "OUT05") for s in ("", ".up")}
    for block in ("IN01", "IN04", "M00", "OUT05"):
        assert groups[f"unet.{block}"]["lr"] == pytest.approx(1e-3 * weights[block])
        assert groups[f"unet.{block}.up"]["lr"] == pytest.approx(4e-3 * weights[block])
    assert weights["IN01"] == pytest.approx(1 / 11) and weights["M00"] == 0.5 and weights["OUT05"] == 5.0
    wrapper = lora_modules(model)["mid_block.proj"].adapters["default"]
    assert [id(p) for p in groups["unet.M00"]["params"]] == [id(wrapper.down.weight)]
    assert [g["name"] for g in param_groups({"unet": model}, cfg)] == ["unet", "unet.up"]  # unset: as before


# ----------------------------------------------------------------------------- the optimizer table

@pytest.mark.parametrize("name, args, cls_path, expect", [
    ("lion", {}, "lion_pytorch.Lion", {"lr": 2e-4, "weight_decay": 0.1, "betas": (0.9, 0.99)}),
    ("lion", {"betas": [0.95, 0.98]}, "lion_pytorch.Lion", {"betas": [0.95, 0.98]}),
    ("adafactor", {}, "transformers.optimization.Adafactor", {"relative_step": True, "weight_decay": 0.1}),
    ("adafactor", {"relative_step": False, "scale_parameter": False}, "transformers.optimization.Adafactor",
     {"lr": 2e-4, "relative_step": False, "scale_parameter": False}),
    ("adamw_schedulefree", {}, "schedulefree.AdamWScheduleFree",
     {"lr": 2e-4, "betas": (0.8, 0.9), "warmup_steps": 3, "train_mode": True}),
    ("torch.optim.SGD", {"momentum": 0.5, "nesterov": True}, "torch.optim.SGD",
     {"lr": 2e-4, "momentum": 0.5, "nesterov": True, "weight_decay": 0}),
])
def test_optimizers_get_their_settings_and_optimizer_args(name, args, cls_path, expect):
    module, _, cls = cls_path.rpartition(".")
    pytest.importorskip(module)
    cfg = TrainConfig(optimizer=name, optimizer_args=args, lr=2e-4, weight_decay=0.1, betas=[0.8, 0.9],
                      warmup_steps=3 if name == "adamw_schedulefree" else 0)
    opt = build_optimizer(param_groups({"unet": _model()}, cfg), cfg)
    assert type(opt).__name__ == cls and type(opt).__module__.startswith(module.split(".")[0])
    group = opt.param_groups[0]
    assert {k: group[k] for k in expect} == expect
    if name == "adafactor" and not args:  # relative-step mode: the group rates are not used
        assert opt.defaults["lr"] is None


@pytest.mark.parametrize("name, args, sets, message", [
    ("nosuch_pkg.Opt", {}, {}, r"train.optimizer = 'nosuch_pkg.Opt': cannot import nosuch_pkg"),
    ("torch.optim.Nope", {}, {}, r"train.optimizer = 'torch.optim.Nope': torch.optim has no Nope"),
    ("collections.OrderedDict", {}, {}, r"'collections.OrderedDict' is not a torch.optim.Optimizer class"),
    ("adamw", {"bogus": 1}, {}, r"train.optimizer_args: adamw refused .*bogus"),
    ("adafactor", {}, {"lr_scheduler": "cosine"}, r"train.lr_scheduler = 'cosine' with adafactor's relative_step"),
    ("adafactor", {}, {"warmup_steps": 5}, r"train.warmup_steps with adafactor's relative_step"),
    ("adamw_schedulefree", {}, {"lr_scheduler": "linear"}, r"train.lr_scheduler = 'linear' with adamw_schedulefree"),
])
def test_optimizer_mistakes_name_the_key(name, args, sets, message):
    cfg = TrainConfig(optimizer=name, optimizer_args=args, **sets)
    with pytest.raises(SdloraError, match=message):
        build_optimizer(param_groups({"unet": _model()}, cfg), cfg)


def test_config_refuses_bad_optimizer_names_and_args():
    for bad, key in [("train.optimizer=adam w", "train.optimizer"), ("train.optimizer=Lion", "train.optimizer"),
                     ("train.optimizer_args.eps=nan", "train.optimizer_args.eps"),
                     ('train.optimizer_args={"a b" = 1}', "train.optimizer_args")]:
        with pytest.raises(SdloraError, match=re.escape(key)):
            load_config(None, [bad])
    for name in OPTIMIZERS:  # the config's pattern and the table name the same optimizers
        assert load_config(None, [f"train.optimizer={name}"]).train.optimizer == name
    cfg = load_config(None, ["train.optimizer=torch.optim.SGD", "train.optimizer_args.momentum=0.9"])
    assert cfg.train.optimizer_args == {"momentum": 0.9}
    assert load_config(None, []).train.optimizer_args == {}


def test_schedule_free_warmup_is_its_own():
    pytest.importorskip("schedulefree")
    cfg = TrainConfig(optimizer="adamw_schedulefree", warmup_steps=4)
    opt = build_optimizer(param_groups({"unet": _model()}, cfg), cfg)
    sched = build_scheduler(opt, cfg, 10)
    assert sched.lr_lambdas[0](0) == 1.0 and opt.param_groups[0]["warmup_steps"] == 4
    assert build_scheduler(torch.optim.SGD(_model().parameters(), lr=1.0), TrainConfig(warmup_steps=4), 10) \
        .lr_lambdas[0](0) == 0.2  # other optimizers warm up through the schedule


# ----------------------------------------------------------------------------- schedule-free eval weights, resume

def _loss(model):
    x = torch.linspace(-1, 1, 3 * 64).reshape(3, 64)
    return ((model(x) - x.flip(1)) ** 2).mean()


def _steps(model, opt, sched, n):
    for _ in range(n):
        opt.zero_grad()
        _loss(model).backward()
        opt.step()
        sched.step()


def test_averaged_weights_swap_in_the_average_and_restore_training_weights_bitwise():
    pytest.importorskip("schedulefree")
    torch.manual_seed(0)
    model, cfg = _model(64, 8), TrainConfig(optimizer="adamw_schedulefree", lr=1e-2)
    opt = build_optimizer(param_groups({"unet": model}, cfg), cfg)
    _steps(model, opt, build_scheduler(opt, cfg, 10), 4)
    y = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    reference = copy.deepcopy((model, opt))
    reference[1].eval()  # the library's own switch on a copy: what the saved file must hold
    x = [p.detach().clone() for p in reference[1].param_groups[0]["params"]]
    with averaged_weights(opt):
        inside = [p.detach().clone() for p in opt.param_groups[0]["params"]]
        with averaged_weights(opt):  # nested (sampling inside a save): no second switch
            assert all(torch.equal(a, p) for a, p in zip(inside, opt.param_groups[0]["params"]))
    assert all(torch.equal(a, b) for a, b in zip(inside, x)) and not all(torch.equal(a, b) for a, b in zip(x, y))
    assert all(torch.equal(a, p) for a, p in zip(y, opt.param_groups[0]["params"]))
    assert opt.param_groups[0]["train_mode"]
    plain = build_optimizer(param_groups({"unet": model}, TrainConfig()), TrainConfig())
    with averaged_weights(plain):  # other optimizers: nothing to switch
        assert all(torch.equal(a, p) for a, p in zip(y, plain.param_groups[0]["params"]))


RESUMABLE = [("adamw", {}), ("lion", {}), ("adafactor", {}), ("adafactor", {"relative_step": False}),
             ("adamw_schedulefree", {}), ("torch.optim.SGD", {"momentum": 0.9})]


@pytest.mark.parametrize("name, args", RESUMABLE, ids=lambda v: str(v) if v else "")
def test_every_optimizer_resumes_exactly_through_the_training_state(name, args):
    """k steps, a checkpoint (the LoRA file written in eval weights, the state saved and loaded back as
    state.pt is), then both runs go on: the resumed one must equal the uninterrupted one bit for bit,
    also when the uninterrupted one samples (eval weights) in between."""
    module = {"lion": "lion_pytorch", "adamw_schedulefree": "schedulefree"}.get(name)
    if module:
        pytest.importorskip(module)
    cfg = TrainConfig(optimizer=name, optimizer_args=args, lr=1e-2, lr_scheduler="constant" if name in (
        "adafactor", "adamw_schedulefree") else "cosine")

    def fresh():
        torch.manual_seed(0)
        model = _model(64, 8)  # 2,048 LoRA weights: the eval/train switch rounds some of them
        for p in model.parameters():
            if p.requires_grad:
                p.data.normal_(0.0, 0.1)  # up weights not zero, so every parameter moves from step 1
        opt = build_optimizer(param_groups({"unet": model}, cfg), cfg)
        return model, opt, build_scheduler(opt, cfg, 8)

    model, opt, sched = fresh()
    guard = NonFiniteGuard(3, "no")
    _steps(model, opt, sched, 3)
    with averaged_weights(opt):
        exported = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    buffer = io.BytesIO()
    torch.save(training_state(step=3, stream={}, models={"unet": model}, optimizer=opt, scheduler=sched, scaler=None,
                              guard=guard, num_processes=1, config=""), buffer)
    _steps(model, opt, sched, 1)
    with averaged_weights(opt):  # validation samples in the uninterrupted run only
        pass
    _steps(model, opt, sched, 3)

    model2, opt2, sched2 = fresh()
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert restore(state, models={"unet": model2}, optimizer=opt2, scheduler=sched2, scaler=None,
                   guard=NonFiniteGuard(3, "no"), where="state.pt") == 3
    _steps(model2, opt2, sched2, 4)
    a = [p for p in model.parameters() if p.requires_grad]
    b = [p for p in model2.parameters() if p.requires_grad]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and all(x.isfinite().all() for x in a)
    assert not all(torch.equal(x, y) for x, y in zip(a, exported))  # it did train after the checkpoint
    if name == "adamw_schedulefree":  # the file holds the averaged weights, the state the training ones
        assert not all(torch.equal(x, state["lora"][k]) for x, k in zip(exported, sorted(state["lora"])))


def test_a_schedule_free_run_saves_the_averaged_weights_and_keeps_training_ones_in_the_state(make_cfg):
    pytest.importorskip("schedulefree")
    from safetensors.torch import load_file

    from sdlora.train import train
    from sdlora.train.checkpoint import find_checkpoints, load_state

    cfg = make_cfg(**{"train.optimizer": "adamw_schedulefree", "train.lr": 1e-2, "train.steps": 2,
                      "save.precision": "fp32"})
    result = train(cfg)
    saved = load_file(result.lora_files[0])
    state = load_state(find_checkpoints(result.run_dir)[-1])
    assert state["optimizer"]["param_groups"][0]["train_mode"]  # the state resumes in training mode
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    training = state["lora"][f"unet.{module}.adapters.default.up.weight"]
    averaged = saved[f"lora_unet_{module.replace('.', '_')}.lora_up.weight"]
    assert training.abs().max() > 0 and not torch.equal(averaged, training)


def test_adamw_is_fused_on_the_cpu_and_foreach_when_asked():
    """The fused kernel (the fast one for many small LoRA tensors) unless optimizer_args asks for foreach;
    fused and foreach are never both passed (torch refuses that)."""
    groups = param_groups({"unet": _model()}, TrainConfig())
    fused = build_optimizer(groups, TrainConfig()).defaults
    assert fused["fused"] is True and not fused["foreach"]
    asked = build_optimizer(groups, TrainConfig(optimizer_args={"foreach": True})).defaults
    assert asked["foreach"] is True and not asked["fused"]
