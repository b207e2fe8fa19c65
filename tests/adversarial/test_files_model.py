"""Special and broken files where a model is expected (--model, convert-checkpoint): one line naming the
file, never a hang (a FIFO is never opened) and never a traceback."""
import os

import pytest
from safetensors.torch import save_file
import torch

from sdlora.errors import SdloraError
from sdlora.models import convert_checkpoint, load_components
from sdlora.models.checkpoint_io import read_state_dict
from sdlora.models.folder import load_scheduler


def special(tmp_path, kind, suffix):
    path = tmp_path / f"{kind}{suffix}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "garbage":
        path.write_bytes(os.urandom(256))
    elif kind == "lora":
        save_file({"lora_unet_x.lora_down.weight": torch.ones(1, 1)}, path)
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize("kind, message", [
    ("fifo", "not a regular file"), ("dev-zero", "not a regular file"), ("garbage", "not a readable"),
])  # fmt: skip
def test_model_readers_refuse_special_and_broken_files(tmp_path, kind, message, suffix):
    path = special(tmp_path, kind, suffix)
    readers = [load_components, read_state_dict]
    if suffix == ".ckpt":
        readers.append(lambda p: convert_checkpoint(p, tmp_path / "out.safetensors"))
    for read in readers:
        with pytest.raises(SdloraError, match=message) as info:
            read(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_lora_given_as_the_model_is_named(tmp_path):
    with pytest.raises(SdloraError, match=r"lora\.safetensors: this is a LoRA file, not a model"):
        load_components(special(tmp_path, "lora", ".safetensors"))


@pytest.mark.parametrize("part, name", [("unet", "diffusion_pytorch_model.safetensors"), ("unet", "config.json")])
def test_a_fifo_inside_a_model_folder_is_refused_before_it_is_opened(tmp_path, part, name):
    folder = tmp_path / "m"
    for sub in ("unet", "vae", "text_encoder"):
        (folder / sub).mkdir(parents=True)
    os.mkfifo(folder / part / name)
    with pytest.raises(SdloraError, match=rf"{name}: not a regular file"):
        load_components(folder)


def test_a_fifo_scheduler_config_is_refused(tmp_path):
    (tmp_path / "scheduler").mkdir()
    os.mkfifo(tmp_path / "scheduler" / "scheduler_config.json")
    with pytest.raises(SdloraError, match=r"scheduler_config\.json: not a regular file"):
        load_scheduler(tmp_path / "scheduler")
