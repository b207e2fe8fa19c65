"""Every command, every path and number argument, hostile values: each is refused before the
command's handler runs (numbers while parsing, paths right after: so before anything loads or is
written) with one `sdlora: error:` line naming the argument, rc 2.

The arguments are found by walking the parser (path types carry a `kind`, number types their
`bounds`), so a new command or flag is covered without being listed here.
"""
import os
from pathlib import Path

import pytest

from sdlora.cli import build_parser, main


def commands(parser=None):
    """(command path, parser) for every command that runs a handler."""
    return (parser or build_parser()).leaves()


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    (root / "dir").mkdir()
    (root / "file.txt").write_text("x")
    (root / "locked").mkdir(mode=0o500)
    return root


def unwritable_folder(place):
    """A folder this process cannot write into: a 0500 folder, or for root (who may write anywhere)
    a kernel folder that is read-only even for root; None when there is neither."""
    for folder in (place / "locked", Path("/proc/1")):
        if folder.is_dir() and not os.access(folder, os.W_OK):
            return folder
    return None


def valid_value(action, place) -> str:
    kind = getattr(action.type, "kind", None)
    if kind in ("input file",):
        return str(place / "file.txt")
    if kind == "input folder":
        return str(place / "dir")
    if kind in ("output file", "output folder"):
        return str(place / "new-output")
    if kind == "LoRA output file":
        return str(place / "new-output.safetensors")
    if action.choices:
        return next(iter(action.choices))
    return "1"


def hostile_values(kind: str, place) -> dict[str, str]:
    """label -> value that must be refused for an argument of `kind`."""
    missing, file, folder = place / "missing" / "x", place / "file.txt", place / "dir"
    values = {
        "input file": {"missing": str(missing), "a folder": str(folder), "a device": os.devnull},
        "input folder": {"missing": str(missing), "a file": str(file)},
        "output folder": {"a file": str(file), "under a file": str(file / "sub")},
        "output file": {"a folder": str(folder), "in a missing folder": str(missing), "under a file": str(file / "x")},
        "LoRA output file": {"not .safetensors": str(place / "out.txt"), "in a missing folder": str(missing) + ".safetensors",
                             "under a file": str(file / "x.safetensors")},
    }[kind]
    locked = unwritable_folder(place)
    if "output" in kind and locked is not None:
        values["unwritable"] = str(locked / "out")
    return values


def argv_with(path, parser, target, value, place) -> list[str]:
    """The command with every required argument valid, and `target` set to `value`."""
    argv = list(path)
    for action in parser.arguments:
        if action is target:
            argv += [*action.option_strings[:1], value]
        elif not action.option_strings and action.dest != "help":
            argv += [valid_value(action, place)]
        elif action.required:
            argv += [action.option_strings[0], valid_value(action, place)]
    return argv


def cases():
    for path, parser in commands():
        for action in parser.arguments:
            kind = getattr(action.type, "kind", None)
            if kind:
                yield path, action, kind
            elif hasattr(action.type, "bounds"):
                yield path, action, "number"


CASES = list(cases())


def test_the_walk_finds_the_arguments_of_every_kind():
    kinds = {kind for _, _, kind in CASES}
    assert kinds == {"input file", "input folder", "output file", "LoRA output file", "output folder", "number"}
    flags = {(path[-1], action.option_strings[0] if action.option_strings else action.dest) for path, action, _ in CASES}
    assert {("generate", "--output"), ("generate", "--prompts"), ("generate", "--seed"), ("demo", "--threads"),
            ("convert", "output"), ("inspect", "--json"), ("evaluate", "--train-images")} <= flags


@pytest.mark.parametrize("path, action, kind", CASES,
                         ids=[f"{' '.join(p)} {a.option_strings[0] if a.option_strings else a.dest}" for p, a, _ in CASES])
def test_hostile_values_are_refused_before_any_work(path, action, kind, place, capsys):
    parser = build_parser()
    sub = dict(commands(parser))[path]
    target = next(a for a in sub.arguments if a.dest == action.dest)
    if kind == "number":
        low, high = target.type.bounds
        values = {"below": str(low - 1), "text": "many"} | ({"above": str(high + 1)} if high is not None else {})
        if high is not None and high > 2**31:
            values["huge"] = "99999999999999999999"
    else:
        values = hostile_values(kind, place)
    for label, value in values.items():
        argv = argv_with(path, sub, target, value, place)
        if kind == "number":  # refused by the parser itself
            with pytest.raises(SystemExit) as exc:
                parser.parse_args(argv)
            code = exc.value.code
        else:  # refused by the path check main() runs before the handler
            code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, (label, err)
        assert err.startswith("sdlora: error: ") and "Traceback" not in err, (label, err)
        name = target.option_strings[0] if target.option_strings else target.metavar
        assert name in err, (label, err)
    assert not (place / "new-output").exists() and not (place / "new-output.safetensors").exists()


def test_valid_values_parse(place):
    """The skeleton the hostile test builds is itself valid, so each refusal above is the hostile value's."""
    parser = build_parser()
    for path, sub in commands(parser):
        args = parser.parse_args(argv_with(path, sub, None, "", place))
        assert args.command_parser is sub
        sub.check(args)


@pytest.mark.parametrize("command", ["convert", "resize"])
def test_an_existing_output_file_needs_overwrite(command, place, capsys):
    out = place / f"{command}.safetensors"
    out.write_bytes(b"keep me")
    extra = ["--to", "kohya"] if command == "convert" else ["--rank", "1"]
    assert main([command, str(place / "file.txt"), str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"sdlora: error: {out} exists: pass --overwrite to replace it, or choose another name"
    assert out.read_bytes() == b"keep me"


def test_merge_into_model_never_replaces_a_folder_of_other_files(place, tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    monkeypatch.chdir(tmp_path)
    assert main(["merge-into-model", "tiny", str(place / "file.txt"), ".", "--overwrite"]) == 2
    assert "working folder" in capsys.readouterr().err
    assert main(["merge-into-model", "tiny", str(place / "file.txt"), str(place), "--overwrite"]) == 2
    assert "not a diffusers model" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me" and (place / "file.txt").exists()
