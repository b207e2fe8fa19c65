"""The docs can be trusted: every `sdlora ...` command they show parses with the real CLI parser, every
config key they name exists, every TOML snippet is a valid (partial) run config, and every relative link
points at an existing file and heading.

Scope: README.md, docs/**/*.md and examples/**/README.md. Commands are taken from fenced code blocks:
lines starting with `sdlora ` or `accelerate launch ... -m sdlora ...`, with `\\` continuations joined
and shell comments dropped; they are parsed with `build_parser().parse_args`, never run.
That docs/config.md matches the config definitions is checked by
tests/test_config.py::test_config_reference_in_docs_is_current (not repeated here).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from sdlora.cli import build_parser
from sdlora.config import iter_fields, load_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
SECTIONS = ("model", "lora", "data", "train", "save", "validation", "log", "ema")
# `train.lr`, `data.sources[].path`, `data.sources.0.repeats` at the start of an inline code span
KEY_IN_CODE = re.compile(r"`((?:%s)\.[A-Za-z_][\w.\[\]]*)" % "|".join(SECTIONS))
FILE_SUFFIXES = (".log", ".toml", ".json", ".png", ".safetensors", ".md", ".txt", ".html", ".pt")


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "examples").rglob("README.md"))]
    return [f for f in files if f.is_file()]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number of the body's first line) for every fenced block."""
    return [(m.group(1), m.group(2), text.count("\n", 0, m.start(2)) + 1) for m in FENCE.finditer(text)]


def logical_lines(body: str, first: int) -> list[tuple[str, int]]:
    """Lines with `\\` continuations joined, each with the line number it starts on."""
    out, pending, start = [], "", first
    for number, line in enumerate(body.splitlines(), start=first):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((pending + line, start))
        pending = ""
    if pending:
        out.append((pending, start))
    return out


def sdlora_argv(line: str) -> list[str] | None:
    """The sdlora arguments of a shell line, or None when it is not an sdlora command."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    if words[:1] == ["sdlora"]:
        return words[1:]
    if words[:2] == ["accelerate", "launch"]:
        for i in range(2, len(words) - 1):
            if words[i] == "-m" and words[i + 1] == "sdlora":
                return words[i + 2:]
    return None


def shell_lines() -> list[tuple[str, str]]:
    """(where, logical line) for every line of every fenced block of the docs."""
    found = []
    for path in doc_files():
        for _, body, first in code_blocks(path.read_text(encoding="utf-8")):
            found += [(f"{rel(path)}:{number}", line.strip()) for line, number in logical_lines(body, first)]
    return found


def doc_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) for every sdlora command in a fenced block of the docs."""
    return [(where, argv) for where, line in shell_lines() if (argv := sdlora_argv(line)) is not None]


COMMANDS = doc_commands()


def test_the_docs_show_commands_of_every_group():
    """Guards the extraction itself: a broken regex would otherwise make the parse test vacuous."""
    assert len(COMMANDS) >= 40
    shown = {argv[0] for _, argv in COMMANDS if argv}
    assert {"train", "dataset", "generate", "compare", "evaluate", "convert-checkpoint", "convert", "info",
            "resize", "merge-into-model"} <= shown
    launches = [where for where, line in shell_lines() if line.startswith("accelerate launch")]
    assert launches and set(launches) <= {where for where, _ in COMMANDS}  # multi-GPU lines are checked too
    missed = [where for where, line in shell_lines() if line.startswith("sdlora") and sdlora_argv(line) is None]
    assert not missed, f"sdlora lines that could not be split: {missed}"
    for recipe in ("anime-style", "personal-portrait", "art-style", "fantasy-creatures"):
        groups = {argv[0] for where, argv in COMMANDS if where.startswith(f"examples/{recipe}/README.md")}
        assert {"dataset", "train", "compare", "evaluate", "generate"} <= groups, recipe


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_command_parses(where, argv):
    parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0 and {"--help", "-h", "--version"} & set(argv):
            return
        pytest.fail(f"{where}: `sdlora {shlex.join(argv)}` does not parse: {err.getvalue().strip()}")
    assert getattr(args, "handler", None) is not None, f"{where}: `sdlora {shlex.join(argv)}` names no command"



def test_the_readme_and_the_docs_use_canonical_flag_names():
    """`--output`, not its alias `--out` (the first option string of an argument is its canonical name;
    tests/test_cli.py keeps it first). The recipes in examples/ are their authors' and not checked here."""
    parser, aliased = build_parser(), []
    for where, argv in COMMANDS:
        if where.startswith("examples/") or {"--help", "-h", "--version"} & set(argv):
            continue
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            command = parser.parse_args(argv).command_parser
        used = {word.split("=", 1)[0] for word in argv if word.startswith("--")}
        for action in command.arguments:
            aliased += [f"{where}: {alias} (say {action.option_strings[0]})"
                        for alias in action.option_strings[1:] if alias.startswith("--") and alias in used]
    assert not aliased, "aliases in the docs:\n" + "\n".join(aliased)

def test_accelerate_launch_lines_are_found():
    line = "accelerate launch --multi_gpu --num_processes 2 -m sdlora train --config my.toml"
    assert sdlora_argv(line) == ["train", "--config", "my.toml"]
    joined = logical_lines("sdlora compare --lora a.safetensors \\\n  --weights 0.5,1.0  # both\n", 1)
    assert joined == [("sdlora compare --lora a.safetensors    --weights 0.5,1.0  # both", 1)]
    assert sdlora_argv(joined[0][0]) == ["compare", "--lora", "a.safetensors", "--weights", "0.5,1.0"]
    assert sdlora_argv("tensorboard --logdir runs/x/logs") is None


# ----------------------------------------------------------------------------- config keys and TOML

def known_keys() -> set[str]:
    keys = set()
    for key, *_ in iter_fields():
        parts = key.split(".")
        keys.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return keys


def normalise_key(text: str) -> str:
    """`data.sources.0.path` / `data.sources[0].path` -> `data.sources[].path`; trailing dots dropped."""
    text = re.sub(r"\[\d*\]", "[]", text.rstrip("."))
    return re.sub(r"\.(\d+)(?=\.|$)", "[]", text).replace("[][]", "[]")


def named_keys() -> list[tuple[str, str]]:
    out = []
    for path in doc_files():
        if path.name == "config.md" and path.parent.name == "docs":
            continue  # generated from the definitions themselves
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            for match in KEY_IN_CODE.finditer(line):
                key = match.group(1)
                if not key.endswith(FILE_SUFFIXES):
                    out.append((f"{rel(path)}:{number}", normalise_key(key)))
    return out


def test_every_config_key_named_in_the_docs_exists():
    keys, named = known_keys(), named_keys()
    assert len(named) >= 50
    unknown = [f"{where}: `{key}`" for where, key in named if key not in keys]
    assert not unknown, "config keys that do not exist:\n" + "\n".join(unknown)


def test_normalise_key():
    assert normalise_key("data.sources.0.repeats") == "data.sources[].repeats"
    assert normalise_key("data.sources[].path") == "data.sources[].path"
    assert normalise_key("train.lr") == "train.lr"


def toml_snippets() -> list[tuple[str, str]]:
    out = []
    for path in doc_files():
        for lang, body, first in code_blocks(path.read_text(encoding="utf-8")):
            if lang == "toml":
                out.append((f"{rel(path)}:{first}", body))
    return out


@pytest.mark.parametrize("where, body", toml_snippets(), ids=[w for w, _ in toml_snippets()])
def test_toml_snippet_is_a_valid_partial_config(where, body):
    load_config(None, base=tomllib.loads(body))  # raises SdloraError naming the bad key


# ----------------------------------------------------------------------------- links

def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE)}


def test_relative_links_and_anchors_resolve():
    broken = []
    for path in doc_files():
        text = FENCE.sub("", path.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{rel(path)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{rel(path)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_slug_matches_github():
    assert slug("Getting Stable Diffusion 1.4") == "getting-stable-diffusion-14"
    assert slug("Time and memory on an 8 GB GPU") == "time-and-memory-on-an-8-gb-gpu"
    assert slug("`[lora]`: what is trained") == "lora-what-is-trained"


def test_images_shown_in_the_docs_exist():
    image = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
    shown, missing = 0, []
    for path in doc_files():
        for target in image.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
            shown += 1
            if not re.match(r"^[a-z]+:", target) and not (path.parent / target).is_file():
                missing.append(f"{rel(path)}: {target}")
    assert shown >= 2 and not missing, f"missing images: {missing}"


# ----------------------------------------------------------------------------- the README and the site

def test_the_readme_starts_with_the_two_set_up_commands():
    """The first command a reader meets is `./dev.sh demo`, then `./dev.sh test`, and dev.sh knows both."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    _, first_block, _ = code_blocks(text)[0]
    commands = [shlex.split(line, comments=True) for line in first_block.splitlines()]
    assert commands == [["./dev.sh", "demo"], ["./dev.sh", "test"]]
    dev_sh = (ROOT / "dev.sh").read_text(encoding="utf-8")
    assert "  demo)" in dev_sh and "  test)" in dev_sh
    assert "./dev.sh test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")  # CI runs the README's command


def load_hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "scripts" / "mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_links_leaving_the_site_point_at_the_repository():
    outside = load_hooks().outside_link
    repo = "https://example.org/o/sdlora"
    docs = ROOT / "docs"
    assert outside("../../examples/README.md", "guide/README.md", docs, repo) == f"{repo}/blob/main/examples/README.md"
    assert outside("../benchmarks/RESULTS.md", "index.md", docs, repo) == f"{repo}/blob/main/benchmarks/RESULTS.md"
    assert outside("../examples", "index.md", docs, repo) == f"{repo}/tree/main/examples"
    assert outside("install.md", "guide/README.md", docs, repo) is None  # a page of the site
    assert outside("../config.md", "guide/training.md", docs, repo) is None
    assert outside("https://pytorch.org", "guide/install.md", docs, repo) is None


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    """`mkdocs build --strict`: a page missing from the nav, a broken link or anchor fails the build."""
    import subprocess

    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    guide = (tmp_path / "site" / "guide" / "index.html").read_text(encoding="utf-8")
    assert "/blob/main/examples/README.md" in guide  # the recipes link, rewritten by the hook
    assert (tmp_path / "site" / "images" / "demo-grid.png").is_file()


def test_the_readme_picture_script_crops_blank_margins():
    import importlib.util

    from PIL import Image

    spec = importlib.util.spec_from_file_location("readme_images", ROOT / "scripts" / "readme_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image = Image.new("RGB", (200, 100), "white")
    image.paste((200, 30, 30), (50, 20, 90, 70))  # content at x 50..89, y 20..69
    cropped = module.crop_margins(image, pad=4)
    assert cropped.size == (40 + 8, 50 + 8)
    assert cropped.getpixel((4, 4)) == (200, 30, 30) and cropped.getpixel((0, 0)) == (255, 255, 255)
