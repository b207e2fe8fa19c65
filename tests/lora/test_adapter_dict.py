"""Adapter names are data: any name (even an attribute of nn.Module, like `train` or `to`) works everywhere."""
import pytest
import torch
from torch import nn

from sdlora.lora import inject, lora_modules, lora_state_dict, load_lora_state_dict, remove, set_multiplier
from sdlora.lora.adapter_dict import ESCAPE, AdapterDict

# every attribute of a ModuleDict instance (nn.Module's methods and fields included), plus the escape mark
NAMES = sorted({n for n in dir(AdapterDict()) if n and "." not in n} | {ESCAPE, ESCAPE + "train", "default"})


def test_the_class_of_names_is_the_attributes():
    assert {"train", "to", "keys", "forward", "training", "_modules", "__init__"} <= set(NAMES)


def test_every_attribute_name_is_a_working_adapter_name():
    model = nn.Sequential(nn.Linear(4, 3))
    x = torch.randn(2, 4)
    base = model(x)
    for name in NAMES:
        inject(model, ["0"], rank=1, adapter=name, init="gaussian")
    wrapper = lora_modules(model)["0"]
    assert sorted(wrapper.adapters) == NAMES and all(name in wrapper.adapters for name in NAMES)
    assert [k for k, _ in wrapper.adapters.items()] == list(wrapper.adapters.keys())
    for name in ("train", "to", ESCAPE + "train"):
        sd = lora_state_dict(model, name)
        sd["0.lora_up.weight"] = torch.ones_like(sd["0.lora_up.weight"])
        load_lora_state_dict(model, sd, name)
        set_multiplier(model, name, 0.5)
        assert wrapper.adapters[name].multiplier == 0.5
    assert not torch.allclose(model(x), base)
    assert isinstance(model.train(), nn.Sequential)  # the dict's own methods still work
    for name in NAMES:
        remove(model, name)
    assert isinstance(model[0], nn.Linear) and torch.equal(model(x), base)


def test_ordinary_names_keep_their_state_dict_keys():
    model = nn.Sequential(nn.Linear(4, 3))
    inject(model, ["0"], rank=1)
    inject(model, ["0"], rank=1, adapter="to")
    keys = set(model.state_dict())
    assert "0.adapters.default.down.weight" in keys and f"0.adapters.{ESCAPE}to.down.weight" in keys


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 1e30, -101.0, True, "1"])
def test_multipliers_must_be_finite_and_bounded(value):
    model = nn.Sequential(nn.Linear(4, 3))
    inject(model, ["0"], rank=1)
    with pytest.raises(ValueError, match="LoRA multiplier must be a finite number between -100 and 100"):
        set_multiplier(model, "default", value)
    with pytest.raises(ValueError, match="multiplier must be a finite number between -100 and 100"):
        inject(model, ["0"], rank=1, adapter="other", multiplier=value)
    assert lora_modules(model)["0"].adapters["default"].multiplier == 1.0
