"""Argument types and output-path rules shared by every command, checked while the command line is
parsed: a bad number or path is refused before anything is loaded or written.

Each type is a function `text -> value` that raises argparse.ArgumentTypeError with a message saying
what was wrong and what to give instead; the parser prints it as one `sdlora: error:` line.
Functions carry a `kind` attribute ("input file", "output folder", ...) so tests can find every path
argument of every command and try it with hostile paths.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

SEED_MAX = 2**32 - 1  # A1111's and kohya's seed range; torch generators take any of them


def _kind(kind: str):
    def mark(fn):
        fn.kind = kind
        return fn
    return mark


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


def _check_writable_parent(path: Path) -> None:
    """Refuse a path whose existing ancestor is a file or not writable (a folder may still be missing)."""
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{path}: folder {existing} is not writable; choose another place")


def input_file_of(what: str = "file"):
    """A type for an existing regular file; `what` names it in messages (`x.toml: config file not found`)."""
    @_kind("input file")
    def input_file(text: str) -> Path:
        path = Path(text).expanduser()
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: is a folder; give a {what}")
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"{text}: {'not a regular file' if path.exists() else what + ' not found'}")
        return path
    return input_file


input_file = input_file_of()


@_kind("input folder")
def input_dir(text: str) -> Path:
    """An existing folder."""
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {'is a file; give a folder' if path.exists() else 'folder not found'}")
    return path


@_kind("output folder")
def output_dir(text: str) -> Path:
    """A folder to write into: existing, or creatable (its nearest existing ancestor a writable folder)."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a file; give a folder to write into")
    _check_writable_parent(path)
    return path


@_kind("output file")
def output_file(text: str) -> Path:
    """A file to write: not a folder, in an existing writable folder (overwriting is checked separately)."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a folder; give a file name")
    parent = _missing_parent(path)
    if parent is not None:
        what = "is a file" if parent.exists() else "does not exist"
        raise argparse.ArgumentTypeError(f"{text}: folder {parent} {what}; create the folder first")
    _check_writable_parent(path)
    return path


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
