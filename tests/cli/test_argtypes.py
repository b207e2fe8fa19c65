"""Argument types and the output-path rules of src/sdlora/cli/argtypes.py."""
import argparse

import pytest

from sdlora.cli import argtypes as T
from sdlora.errors import SdloraError


@pytest.mark.parametrize("parse, good, bad", [
    (T.positive_int, {"1": 1, "12": 12}, ["0", "-3", "1.5", "x"]),
    (T.seed, {"0": 0, str(2**32 - 1): 2**32 - 1}, ["-1", str(2**32), "99999999999999999999"]),
    (T.float_range(0.0, 1.0), {"0": 0.0, "0.25": 0.25, "1": 1.0}, ["-0.1", "1.5", "nan", "inf", "x"]),
    (T.float_range(0.0, low_open=True), {"1e-4": 1e-4}, ["0", "-1"]),
])
def test_number_types(parse, good, bad):
    assert {text: parse(text) for text in good} == good
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(text)


def test_path_types_parse_anything_and_check_later(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    missing = tmp_path / "missing.toml"
    assert T.input_file(str(missing)) == missing  # parsing never looks at the disk (docs commands parse anywhere)
    T.input_file.check(tmp_path / "f.txt")
    T.input_dir.check(tmp_path)
    T.output_dir.check(tmp_path / "new" / "deeper")  # created later
    T.output_file.check(tmp_path / "f.txt")  # existing: the overwrite rule decides
    with pytest.raises(argparse.ArgumentTypeError, match="config file not found"):
        T.input_file_of("config file").check(missing)
    for check, path, message in [(T.input_file.check, tmp_path, "is a folder"),
                                 (T.input_dir.check, tmp_path / "f.txt", "is a file"),
                                 (T.output_dir.check, tmp_path / "f.txt" / "x", "is a file, not a folder"),
                                 (T.output_file.check, tmp_path / "no" / "x.json", "does not exist")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            check(path)


def test_fresh_output_dir_numbers_runs_and_overwrite_keeps_the_name(tmp_path):
    out = tmp_path / "gen"
    assert T.fresh_output_dir(out, False) == out  # missing
    out.mkdir()
    assert T.fresh_output_dir(out, False) == out  # empty
    (out / "00000.png").write_bytes(b"")
    assert T.fresh_output_dir(out, False) == tmp_path / "gen-2"
    (tmp_path / "gen-2").mkdir()
    assert T.fresh_output_dir(out, False) == tmp_path / "gen-3"
    assert T.fresh_output_dir(out, True) == out


def test_refuse_overwrite(tmp_path):
    path = tmp_path / "x.safetensors"
    T.refuse_overwrite(path, False)
    path.write_bytes(b"")
    T.refuse_overwrite(path, True)
    with pytest.raises(SdloraError, match="pass --overwrite"):
        T.refuse_overwrite(path, False)
