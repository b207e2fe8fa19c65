"""tensor_file: a .safetensors file read tensor by tensor gives what safetensors itself loads."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from sdlora.errors import SdloraError
from sdlora.models.tensor_file import TensorFile


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "w32": torch.randn(3, 5, generator=gen),
        "w16": torch.randn(4, 2, 1, 1, generator=gen).half(),
        "wbf": torch.randn(7, generator=gen).bfloat16(),
        "i64": torch.arange(6).reshape(2, 3),
        "mask": torch.tensor([True, False, True]),
        "alpha": torch.tensor(4.0),
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path_factory.mktemp("tensor-file") / "mixed.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "x"})
    return path


def test_every_tensor_reads_as_safetensors_loads_it(mixed):
    want = load_file(str(mixed))
    file = TensorFile(mixed)
    assert sorted(file.keys()) == sorted(want) and file.metadata == {"format": "pt", "note": "x"}
    for key in reversed(file.keys()):  # any order
        got = file.read(key)
        assert got.dtype == want[key].dtype and got.shape == want[key].shape == file.shape(key)
        assert torch.equal(got, want[key]), key
    assert file.reads == len(want)
    with pytest.raises(KeyError):
        file.read("nope")


def test_a_read_tensor_owns_its_memory(mixed):
    file = TensorFile(mixed)
    a, b = file.read("w32"), file.read("w32")
    a.zero_()  # writable, and not shared with the file or another read
    assert bool(b.abs().sum() > 0)


def test_bad_files_are_one_line_errors(mixed, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(mixed.read_bytes()[:-20])
    with pytest.raises(SdloraError, match="cut.safetensors: not a readable") as err:
        TensorFile(cut)
    assert "\n" not in str(err.value)
    fp8 = tmp_path / "fp8.safetensors"
    save_file({"w": torch.zeros(2, dtype=torch.float8_e4m3fn)}, str(fp8))
    with pytest.raises(SdloraError, match="fp8.safetensors: w has dtype F8_E4M3"):
        TensorFile(fp8).read("w")
