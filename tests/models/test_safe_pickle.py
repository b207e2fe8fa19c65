"""The restricted unpickler: SD's harmless globals load, anything else is refused before it runs."""
import os
import pickle

import numpy as np
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.models.safe_pickle import LightningCallbackStandIn, refused_global, safe_load


class Payload:
    """Pickles as a call to `func(*args)`: what a malicious checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_lightning_checkpoint_loads_with_stand_in(tmp_path, save_lightning_ckpt):
    save_lightning_ckpt(tmp_path / "m.ckpt", {"w": torch.arange(4.0)})
    obj = safe_load(tmp_path / "m.ckpt")
    assert torch.equal(obj["state_dict"]["w"], torch.arange(4.0)) and obj["global_step"] == 470000
    (key,) = obj["callbacks"]
    assert key is LightningCallbackStandIn
    assert isinstance(obj["hparams"]["instance"], LightningCallbackStandIn)
    assert obj["hparams"]["instance"].monitor == "val/loss_simple_ema"


def test_numpy_scalars_load(tmp_path):
    torch.save({"score": np.float64(0.25), "step": np.int64(7)}, tmp_path / "n.ckpt")
    obj = safe_load(tmp_path / "n.ckpt")
    assert obj["score"] == 0.25 and obj["step"] == 7


@pytest.mark.parametrize("func, args, name", [
    (os.system, ("touch {marker}",), "system"),
    (eval, ("open({marker!r}, 'w').close()",), "eval"),
    (exec, ("open({marker!r}, 'w').close()",), "exec"),
])  # fmt: skip
def test_code_running_pickle_is_refused_and_never_runs(tmp_path, func, args, name):
    marker = tmp_path / "pwned"
    payload = Payload(func, *(a.format(marker=str(marker)) for a in args))
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": payload}, tmp_path / "evil.ckpt")
    with pytest.raises(SdloraError, match=rf"evil\.ckpt: refused to unpickle.*`[\w.]*{name}`.*\.safetensors") as info:
        safe_load(tmp_path / "evil.ckpt")
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_legacy_format_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    obj = {"w": torch.zeros(2), "x": Payload(os.system, f"touch {marker}")}
    torch.save(obj, tmp_path / "old.ckpt", _use_new_zipfile_serialization=False)
    with pytest.raises(SdloraError, match="system"):
        safe_load(tmp_path / "old.ckpt")
    assert not marker.exists()


def test_plain_pickle_with_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "p.ckpt").write_bytes(pickle.dumps(Payload(os.system, f"touch {marker}"), protocol=2))
    with pytest.raises(SdloraError, match="p.ckpt"):
        safe_load(tmp_path / "p.ckpt")
    assert not marker.exists()


def test_unlisted_class_is_named(tmp_path):
    torch.save({"opt": torch.optim.SGD}, tmp_path / "c.ckpt")
    with pytest.raises(SdloraError, match="torch.optim.sgd.SGD"):
        safe_load(tmp_path / "c.ckpt")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_files_give_one_line_errors(tmp_path, damage):
    path = tmp_path / "d.ckpt"
    torch.save({"state_dict": {"w": torch.randn(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(2048), "empty": b""}[damage])
    with pytest.raises(SdloraError, match=r"d\.ckpt: not a readable torch checkpoint") as info:
        safe_load(path)
    assert "\n" not in str(info.value)


def test_refused_global_parses_both_torch_messages():
    assert refused_global("Unsupported global: GLOBAL os.system was not an allowed global") == "os.system"
    assert refused_global("Trying to load unsupported GLOBAL posix.system whose module posix is blocked") == "posix.system"
    assert refused_global("but got <class 'numpy.dtypes.Float64DType'>") == "numpy.dtypes.Float64DType"
    assert refused_global("Unsupported operand 172") is None
