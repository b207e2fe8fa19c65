"""sdlora.fileio: the one atomic write (normal permissions, nothing torn) and the regular-file rule."""
import os
import stat

import pytest
import torch
from safetensors.torch import load_file

from sdlora.errors import SdloraError
from sdlora.fileio import (atomic_path, atomic_save_safetensors, atomic_write_bytes, atomic_write_text, make_temp_dir,
                           regular_file)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_written_files_and_folders_get_the_umask_permissions(tmp_path, umask_022):
    text = atomic_write_text(tmp_path / "sub" / "a.txt", "hello")
    blob = atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    tensors = atomic_save_safetensors(tmp_path / "c.safetensors", {"w": torch.ones(2)}, {"k": "v"})
    folder = make_temp_dir(tmp_path, "step-1")
    assert [stat.S_IMODE(p.stat().st_mode) for p in (text, blob, tensors)] == [0o644] * 3
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755 and folder.name.startswith(".step-1.")
    assert text.read_text() == "hello" and blob.read_bytes() == b"\x00\x01"
    assert torch.equal(load_file(tensors)["w"], torch.ones(2))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_writing_over_a_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(SdloraError, match="is a folder; give a file name"):
        atomic_write_text(tmp_path, "x")


def test_only_regular_files_are_read(tmp_path):
    (tmp_path / "ok.safetensors").write_bytes(b"x")
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "ok.safetensors")
    os.mkfifo(tmp_path / "fifo.safetensors")
    (tmp_path / "zero.safetensors").symlink_to("/dev/zero")
    assert regular_file(tmp_path / "link.safetensors").name == "link.safetensors"
    for name, message in [("fifo.safetensors", r"not a regular file \(this is a FIFO\)"),
                          ("zero.safetensors", r"not a regular file \(this is a character device\)"),
                          ("missing.safetensors", "LoRA file not found"), (".", "is a folder")]:
        with pytest.raises(SdloraError, match=message):
            regular_file(tmp_path / name, "LoRA file")
