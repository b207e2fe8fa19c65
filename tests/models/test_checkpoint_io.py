"""Reading/writing single-file checkpoints and the safe .ckpt -> .safetensors conversion."""
import os

import pytest
import torch
from safetensors.torch import load_file

from sdlora.cli import main as cli_main
from sdlora.errors import SdloraError
from sdlora.models.checkpoint_io import convert_checkpoint, read_state_dict, write_safetensors


@pytest.fixture
def weights():
    return {"a.weight": torch.randn(4, 3), "a.bias": torch.randn(4), "n": torch.tensor(3, dtype=torch.int64)}


def test_safetensors_round_trip_with_metadata(tmp_path, weights):
    write_safetensors(tmp_path / "w.safetensors", weights, {"note": "x"})
    tensors, metadata = read_state_dict(tmp_path / "w.safetensors")
    assert metadata == {"note": "x"} and tensors.keys() == weights.keys()
    assert all(torch.equal(tensors[k], weights[k]) for k in weights)
    assert not (tmp_path / "w.safetensors.tmp").exists()


def test_shared_and_strided_tensors_are_written_separately(tmp_path):
    base = torch.randn(6, 4)
    tensors = {"full": base, "view": base[:2], "transposed": base.t(), "alias": base}
    write_safetensors(tmp_path / "s.safetensors", tensors)
    back = load_file(str(tmp_path / "s.safetensors"))
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)


def test_lightning_ckpt_reads_state_dict_and_scalars(tmp_path, weights, save_lightning_ckpt):
    save_lightning_ckpt(tmp_path / "m.ckpt", weights)
    tensors, metadata = read_state_dict(tmp_path / "m.ckpt")
    assert tensors.keys() == weights.keys() and all(torch.equal(tensors[k], weights[k]) for k in weights)
    assert metadata["global_step"] == "470000" and metadata["epoch"] == "6"


def test_flat_ckpt_reads_tensors_only(tmp_path, weights):
    torch.save({**weights, "step": 5, "nested": {"x": torch.zeros(1)}}, tmp_path / "flat.pt")
    tensors, metadata = read_state_dict(tmp_path / "flat.pt")
    assert tensors.keys() == weights.keys() and metadata == {}


@pytest.mark.parametrize("name, content, message", [
    ("missing.ckpt", None, "checkpoint file not found"),
    ("model.onnx", b"x", "unknown checkpoint type '.onnx'"),
    ("empty.safetensors", b"", "not a readable .safetensors file"),
    ("junk.safetensors", b"\xff" * 64, "not a readable .safetensors file"),
    ("nothing.ckpt", "no-tensors", "contains no tensors"),
    ("list.ckpt", "list", "holds a list, not a state dict"),
])  # fmt: skip
def test_bad_files_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "no-tensors":
        torch.save({"state_dict": {"step": 1}}, path)
    elif content == "list":
        torch.save([torch.zeros(1)], path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(SdloraError, match=message) as info:
        read_state_dict(path)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_truncated_safetensors(tmp_path, weights):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, weights)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(SdloraError, match=r"t\.safetensors: not a readable \.safetensors file"):
        read_state_dict(path)


def test_convert_checkpoint_keeps_every_tensor(tmp_path, weights, save_lightning_ckpt):
    save_lightning_ckpt(tmp_path / "m.ckpt", weights)
    assert convert_checkpoint(tmp_path / "m.ckpt", tmp_path / "m.safetensors") == 3
    tensors, metadata = read_state_dict(tmp_path / "m.safetensors")
    assert all(torch.equal(tensors[k], weights[k]) for k in weights)
    assert metadata["sdlora_converted_from"] == "m.ckpt" and metadata["global_step"] == "470000"


def test_convert_checkpoint_refuses_payload_and_writes_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(SdloraError, match="refused to unpickle"):
        convert_checkpoint(tmp_path / "evil.ckpt", tmp_path / "out.safetensors")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_convert_checkpoint_output_rules(tmp_path, weights):
    torch.save(weights, tmp_path / "m.ckpt")
    with pytest.raises(SdloraError, match="must end in .safetensors"):
        convert_checkpoint(tmp_path / "m.ckpt", tmp_path / "m.ckpt2")
    (tmp_path / "out.safetensors").write_bytes(b"old")
    with pytest.raises(SdloraError, match="already exists; pass --overwrite"):
        convert_checkpoint(tmp_path / "m.ckpt", tmp_path / "out.safetensors")
    assert convert_checkpoint(tmp_path / "m.ckpt", tmp_path / "out.safetensors", overwrite=True) == 3


def test_cli_convert_checkpoint(tmp_path, weights, capsys):
    torch.save({"state_dict": weights}, tmp_path / "m.ckpt")
    assert cli_main(["convert-checkpoint", str(tmp_path / "m.ckpt"), str(tmp_path / "m.safetensors")]) == 0
    assert "wrote 3 tensors" in capsys.readouterr().out
    assert load_file(str(tmp_path / "m.safetensors")).keys() == weights.keys()
    assert cli_main(["convert-checkpoint", str(tmp_path / "m.ckpt"), str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdlora: error: ") and "already exists" in err and err.count("\n") == 1
