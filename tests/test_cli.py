"""The dispatcher (src/sdlora/cli/__init__.py) and the rules every command follows, checked by walking
every sub-parser: canonical names with their aliases, one overwrite rule, help in one style."""
import json
import subprocess
import sys
import typing

import pytest

from sdlora import __version__
from sdlora.cli import build_parser, main

# alias -> the canonical flag it must stand beside (and after) on the same argument
ALIASES = {"--out": "--output", "--cfg": "--guidance"}
# argument dest -> the flag that names it on every command that has it (positional arguments excepted)
CANONICAL = {"output": "--output", "guidance": "--guidance", "sample_steps": "--sample-steps", "seed": "--seed",
             "overwrite": "--overwrite", "save.output_dir": "--output"}
PRECISION_DESTS = {"dtype"}


def commands(parser=None):
    """(command path, parser) for every command that runs a handler."""
    return (parser or build_parser()).leaves()


def command_ids():
    return [" ".join(path) for path, _ in commands()]


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"sdlora {__version__}"


def test_help_and_version_load_no_model_library():
    code = ("import json, sys\nfrom sdlora.cli import main\nfor argv in (['--version'], ['--help']):\n"
            "    try: main(argv)\n    except SystemExit: pass\n"
            "print(json.dumps(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout and "COMMAND" in out.stdout
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "sdlora", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout


def test_help_lists_every_command_with_its_help():
    parser = build_parser()
    text = parser.format_help()
    for name, sub in parser.commands.items():
        assert name in text and sub.help in " ".join(text.split())


@pytest.mark.parametrize("path, parser", list(commands()), ids=command_ids())
def test_every_command_follows_the_naming_rules(path, parser):
    for action in parser.arguments:
        flags = [o for o in action.option_strings if o.startswith("--")]
        for alias, canonical in ALIASES.items():
            if alias in flags:
                assert flags.index(canonical) < flags.index(alias), (path, flags)
        if action.option_strings and CANONICAL.get(action.dest):
            assert flags[0] == CANONICAL[action.dest], (path, action.dest, flags)
        if action.dest in PRECISION_DESTS and action.choices:
            assert "fp32" in action.choices, (path, action.choices)
    dests = {a.dest for a in parser.arguments}
    if dests & {"output", "save.output_dir"} and not parser.get_default("run_folder"):
        assert "overwrite" in dests, f"{path} writes OUTPUT but has no --overwrite"


@pytest.mark.parametrize("path, parser", list(commands()), ids=command_ids())
def test_help_texts_are_capitalised_sentences(path, parser):
    texts = [("command", parser.help)] + [(a.dest, a.help) for a in parser.arguments if a.dest != "help"]
    for dest, text in texts:
        assert text, (path, dest)
        text = text.replace("%(default)s", "x").strip()
        assert text[0].isupper() or text[0] in "`-", (path, dest, text)
        assert text.endswith("."), (path, dest, text)


def test_one_name_works_under_every_alias(tmp_path):
    parser = build_parser()
    base = ["--prompt", "x"]
    for spelling in (["--out", str(tmp_path), "--cfg", "3", "--steps", "4"],
                     ["--output", str(tmp_path), "--guidance", "3", "--sample-steps", "4"]):
        args = parser.parse_args(["generate", *base, *spelling])
        assert (args.output, args.guidance, args.sample_steps) == (tmp_path, 3.0, 4)


def test_train_sample_prompt_and_fp32(tmp_path):
    from sdlora.cli.train import train_flags
    from sdlora.config import Precision

    parser = build_parser()
    for flag in ("--sample-prompt", "--prompt"):
        args = parser.parse_args(["train", flag, "a sks dog", "--mixed-precision", "fp32", "--output", str(tmp_path)])
        flags = train_flags(args)
        assert flags["validation.prompts"] == ["a sks dog"] and flags["train.mixed_precision"] == "no"
        assert flags["train.mixed_precision"] in typing.get_args(Precision)


def test_parse_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--sample-steps", "zero"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert err.startswith("sdlora: error: generate: argument --sample-steps/--steps: expected a whole number")
