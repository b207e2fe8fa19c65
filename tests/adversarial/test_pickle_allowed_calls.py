"""The restricted unpickler, attacked through the calls it allows: numpy.dtype, numpy scalars, the
per-dtype numpy classes, torch's tensor rebuilders and the Lightning stand-in, each given arguments a
hostile file chooses. Every variant ends in the one-line refusal naming the file, never a traceback."""
import collections
import contextlib
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.models.checkpoint_io import read_state_dict
from sdlora.models.safe_pickle import _NP_SCALAR, safe_load


class Call:
    """Pickles as the call func(*args) (what a crafted checkpoint can ask for)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class Built:
    """Pickles as cls() followed by BUILD with `state` (object.__setstate__ / __dict__ update)."""

    def __init__(self, cls, state):
        self.cls, self.state = cls, state

    def __reduce__(self):
        return self.cls, (), self.state


class ModelCheckpoint:
    """Pickled under pytorch_lightning's name, which the unpickler maps to LightningCallbackStandIn."""


LIGHTNING = "pytorch_lightning.callbacks.model_checkpoint"
ModelCheckpoint.__module__ = LIGHTNING


@contextlib.contextmanager
def lightning_importable():
    """pickle finds ModelCheckpoint by its name only while a test file is written."""
    names = ("pytorch_lightning", "pytorch_lightning.callbacks", LIGHTNING)
    saved = {name: sys.modules.get(name) for name in names}
    sys.modules.update({name: types.ModuleType(name) for name in names})
    sys.modules[LIGHTNING].ModelCheckpoint = ModelCheckpoint
    try:
        yield
    finally:
        for name, old in saved.items():
            sys.modules.pop(name) if old is None else sys.modules.__setitem__(name, old)


def save(obj, path):
    with lightning_importable():
        torch.save(obj, path)
REBUILD = torch._utils._rebuild_tensor_v2
VARIANTS = {
    "dtype-garbage": Call(np.dtype, "no such dtype"),
    "dtype-wrong-type": Call(np.dtype, 12345),
    "dtype-too-many-args": Call(np.dtype, "f8", False, True, 7),
    "dtype-object": Call(np.dtype, "O"),
    "dtype-huge-void": Call(np.dtype, "V99999999999999999999"),
    "scalar-no-args": Call(_NP_SCALAR),
    "scalar-bytes-too-short": Call(_NP_SCALAR, np.dtype("f8"), b"\x00"),
    "scalar-not-a-dtype": Call(_NP_SCALAR, "f8", b"\x00" * 8),
    "scalar-object-dtype": Call(_NP_SCALAR, np.dtype("O"), b"\x00" * 8),
    "dtype-class-args": Call(type(np.dtype("f8")), 1, 2, 3),
    "rebuild-no-args": Call(REBUILD),
    "rebuild-str-storage": Call(REBUILD, "storage", 0, (2, 2), (2, 1), False, collections.OrderedDict()),
    "rebuild-negative-size": Call(REBUILD, torch.zeros(4).untyped_storage(), 0, (-5,), (1,), False,
                                  collections.OrderedDict()),
    "rebuild-out-of-bounds": Call(REBUILD, torch.zeros(4).untyped_storage(), 10**12, (10**6,), (1,), False,
                                  collections.OrderedDict()),
    "rebuild-hooks-not-dict": Call(REBUILD, torch.zeros(4).untyped_storage(), 0, (4,), (1,), False, [1, 2]),
    "parameter-bad-args": Call(torch._utils._rebuild_parameter, "x", "y", "z"),
    "ordereddict-bad-args": Call(collections.OrderedDict, 1, 2),
    "size-bad-args": Call(torch.Size, "abc"),
    "lightning-with-args": Call(ModelCheckpoint, 1, 2, 3),
    "lightning-list-state": Built(ModelCheckpoint, [1, 2, 3]),
    "lightning-int-state": Built(ModelCheckpoint, 7),
    "lightning-slots-state": Built(ModelCheckpoint, (None, {"a": 1}, 5)),
    "lightning-dunder-state": Built(ModelCheckpoint, {"__class__": 1}),
}


@pytest.fixture(params=sorted(VARIANTS))
def crafted(request, tmp_path):
    path = tmp_path / f"{request.param}.ckpt"
    try:
        save({"state_dict": {"w": torch.zeros(2)}, "x": VARIANTS[request.param]}, path)
    except Exception:  # noqa: BLE001 (some payloads cannot go through torch.save: plain pickle then)
        with lightning_importable():
            path.write_bytes(pickle.dumps({"w": 1, "x": VARIANTS[request.param]}, protocol=2))
    return path


def test_every_allowed_call_with_hostile_arguments_is_a_one_line_refusal(crafted):
    for load in (safe_load, read_state_dict):
        try:
            load(crafted)
        except SdloraError as err:
            assert str(err).startswith(f"{crafted}: ") and "\n" not in str(err)


def test_the_variants_do_fail_inside_the_unpickler(tmp_path):
    """The class is real: at least these variants raise in torch.load itself, with non-Sdlora exceptions."""
    raised = set()
    for name in ("dtype-garbage", "scalar-bytes-too-short", "lightning-with-args", "rebuild-str-storage"):
        path = tmp_path / f"{name}.ckpt"
        save({"x": VARIANTS[name]}, path)
        with pytest.raises(SdloraError, match=rf"^{path}: not a readable torch checkpoint"):
            safe_load(path)
        raised.add(name)
    assert len(raised) == 4
