import json
import os
from pathlib import Path

import pytest

from sdlora.data.files import (FileRefused, clean_text, image_byte_limit, name_text, parse_json,
                               read_regular, read_text, relative_inside, shown)
from sdlora.fileio import is_regular


def refusal(path, limit=1 << 20) -> FileRefused:
    with pytest.raises(FileRefused) as info:
        read_regular(path, limit)
    return info.value


def test_regular_files_and_links_to_them_are_read(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfhello \xff")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    assert read_regular(tmp_path / "link.txt", 100) == b"\xef\xbb\xbfhello \xff"
    assert read_text(tmp_path / "a.txt", 100) == "hello \ufffd"  # BOM dropped, bad byte replaced
    assert is_regular(tmp_path / "link.txt") and not is_regular(tmp_path) and not is_regular(tmp_path / "nope")


@pytest.mark.parametrize("make, kind", [
    (lambda p: os.mkfifo(p), "FIFO"),  # opening it for reading would block until a writer comes
    (lambda p: p.symlink_to("/dev/zero"), "character device"),  # reading it never ends
    (lambda p: p.symlink_to("/dev/null"), "character device"),
    (lambda p: p.mkdir(), "folder"),
])
def test_special_files_are_refused_without_reading(tmp_path, make, kind):
    path = tmp_path / "x.png"
    make(path)
    err = refusal(path)
    assert err.code == "not_regular" and err.reason.endswith(f"this is a {kind}") and "only regular files" in err.reason
    assert not is_regular(path)


def test_size_limit_from_the_size_on_disk(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 101)
    (tmp_path / "ok").write_bytes(b"x" * 100)
    assert refusal(tmp_path / "big", 100).code == "file_too_big"
    assert "101 bytes > 100" in refusal(tmp_path / "big", 100).reason
    assert len(read_regular(tmp_path / "ok", 100)) == 100
    assert image_byte_limit(10) < image_byte_limit(10**6)


@pytest.mark.parametrize("name", ["missing", "dangling", "loop", "nul"])
def test_missing_and_unopenable_paths_are_unreadable(tmp_path, name):
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    path = {"nul": str(tmp_path / "a\x00b")}.get(name, tmp_path / name)
    assert refusal(path).code == "unreadable"


def test_refusals_survive_pickling():  # they cross DataLoader worker processes
    import pickle

    err = pickle.loads(pickle.dumps(FileRefused("file_too_big", "5 bytes")))
    assert (err.code, err.reason) == ("file_too_big", "file too large: 5 bytes")


def test_names_that_are_not_utf8_print_safely():
    raw = os.fsdecode(b"/d/caf\xe9 \xff.png")  # what os.listdir returns for such a name
    assert shown(raw) == "/d/caf\\xe9 \\xff.png"
    shown(raw).encode("utf-8")  # printable, loggable, JSON-writable
    assert shown(Path("/d/plain é.png")) == "/d/plain é.png"
    assert name_text(os.fsdecode(b"10_caf\xe9")) == "10_caf\ufffd"
    assert clean_text(json.loads('"a\\udcffb"')) == "a?b"


@pytest.mark.parametrize("text, message", [
    ("[" * 200_000, "nested too deeply"),  # json.loads: RecursionError
    ("1" * 5000, "not valid JSON"),         # json.loads: ValueError (too many digits), not JSONDecodeError
    ("{nope", "not valid JSON"),
])
def test_parse_json_fails_with_one_short_value_error(text, message):
    with pytest.raises(ValueError) as info:
        parse_json(text)
    assert message in str(info.value) and "\n" not in str(info.value) and len(str(info.value)) < 200


@pytest.mark.parametrize("name, inside", [
    ("a.png", True), ("sub/a.png", True), ("../a.png", False), ("sub/../../a.png", False),
    ("/etc/passwd", False), ("", False), ("a\x00.png", False),
])
def test_relative_inside_table(name, inside):
    got = relative_inside(Path("/d"), name)
    assert (got is not None) == inside and (got is None or got == Path("/d") / name)
