"""Argument types and output-path rules shared by every command, checked before a command's handler
runs: a bad number or path is refused before anything is loaded or written.

Number types are functions `text -> value` that raise argparse.ArgumentTypeError saying what was
wrong and what to give instead (they carry their `bounds`); path types are PathType objects, checked
against the file system once the command is chosen, before its handler runs, and carry a `kind`
("input file", "output folder", ...). Both end in one `sdlora: error:` line, and tests find every
such argument of every command by these attributes.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from sdlora.generate.prompts import SEED_MAX  # one seed range for every command (a light module)


def int_range(low: int, high: int | None = None):
    """An int type accepting low <= value (<= high)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    parse.__name__, parse.bounds = "int", (low, high)
    return parse


def float_range(low: float, high: float | None = None, *, low_open: bool = False):
    """A finite float type accepting low <= value (<= high); `low_open`: low < value."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            bound = f"{'above' if low_open else 'at least'} {low:g}" + (f" and at most {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value
    parse.__name__, parse.bounds = "float", (low, high)
    return parse


positive_int = int_range(1)
seed = int_range(0, SEED_MAX)


def _missing_parent(path: Path) -> Path | None:
    """The first ancestor of `path` that is not a folder (missing or a file), or None."""
    for parent in reversed(path.absolute().parents):
        if not parent.is_dir():
            return parent
    return None


def _check_writable_folder(folder: Path, shown: Path) -> None:
    """Refuse writing `shown` when the nearest existing one of `folder` and its ancestors is a file or
    not writable (missing folders below it can still be created)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{shown}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{shown}: folder {existing} is not writable; choose another place")


class PathType:
    """An argparse type for a path. Parsing only makes the Path (so any command line, e.g. one in
    the docs, parses anywhere); `check(path)` tests the file system and runs after parsing, before
    the handler (see sdlora.cli.Parser.check), raising ArgumentTypeError with the reason."""

    def __init__(self, kind: str, check):
        self.kind, self.check, self.__name__ = kind, check, kind

    def __call__(self, text: str) -> Path:
        return Path(text).expanduser()


def input_file_of(what: str = "file") -> PathType:
    """An existing regular file; `what` names it in messages (`x.toml: config file not found`)."""
    def check(path: Path) -> None:
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{path}: is a folder; give a {what}")
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"{path}: {'not a regular file' if path.exists() else what + ' not found'}")
    return PathType("input file", check)


def _input_dir(path: Path) -> None:
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {'is a file; give a folder' if path.exists() else 'folder not found'}")


def check_output_dir(path: Path) -> None:
    """A folder to write into: existing, or creatable (its nearest existing ancestor a writable folder)."""
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: is a file; give a folder to write into")
    _check_writable_folder(path, path)


def check_output_file(path: Path) -> None:
    """A file to write: not a folder, in an existing writable folder (overwriting is checked separately)."""
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: is a folder; give a file name")
    parent = _missing_parent(path)
    if parent is not None:
        what = "is a file" if parent.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{path}: folder {parent} {what}; create the folder first")
    _check_writable_folder(path.parent, path)


def check_lora_output(path: Path) -> None:
    """A LoRA file to write: a `.safetensors` name (what A1111, ComfyUI and diffusers look for), then as
    check_output_file."""
    if path.suffix.lower() != ".safetensors":
        raise argparse.ArgumentTypeError(f"{path}: a LoRA file is written as .safetensors; name it "
                                         f"{path.with_suffix('.safetensors').name}")
    check_output_file(path)


input_file = input_file_of()


class LoraArg(PathType):
    """`FILE[:WEIGHT]` -> sdlora.generate.loras.LoraSpec; the file must be a regular file and the
    weight a finite number (a NaN or inf weight would turn every image black)."""

    def __init__(self):
        super().__init__("input file", self._check)

    def __call__(self, text: str):
        from sdlora.generate.loras import parse_lora_arg

        from sdlora.errors import SdloraError

        try:
            return parse_lora_arg(text)  # refuses a weight that is not finite or is out of range
        except SdloraError as err:  # argparse would print only "invalid value"
            raise argparse.ArgumentTypeError(str(err)) from None

    @staticmethod
    def _check(spec) -> None:
        input_file.check(Path(spec.path).expanduser())


lora_arg = LoraArg()
input_dir = PathType("input folder", _input_dir)
output_dir = PathType("output folder", check_output_dir)
output_file = PathType("output file", check_output_file)
lora_output = PathType("LoRA output file", check_lora_output)


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    """The one overwrite rule: an existing file is replaced only with --overwrite."""
    from sdlora.errors import SdloraError

    if path.exists() and not overwrite:
        raise SdloraError(f"{path} exists: pass --overwrite to replace it, or choose another name")


def fresh_output_dir(path: Path, overwrite: bool) -> Path:
    """`path`, or with files from an earlier run in it and no --overwrite, the first free `path-2`,
    `path-3`, ... (so a second run never replaces the first run's images)."""
    if overwrite or not path.is_dir() or not any(path.iterdir()):
        return path
    n = 2
    while (candidate := path.with_name(f"{path.name}-{n}")).exists():
        n += 1
    return candidate
