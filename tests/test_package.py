"""The package as a user installs it: the wheel built from this tree, installed (not editable) into a
fresh virtual environment and run from a folder outside the repository.

Only sdlora comes from the wheel. The heavy dependencies (torch, diffusers, ...) are borrowed from the
environment running the tests through a `.pth` line, so the test costs seconds instead of a full
install; a `.pth` line only extends sys.path (the `.pth` files of the borrowed folder, such as an
editable install of sdlora, are not processed), and the fresh site-packages comes first. So anything
the wheel lacks (the bundled tokenizer, sd-tiny's weights, the SD 1.4 configs) fails here, not on a
user's machine. PYTHONPATH is removed from the environment of every command.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

import sdlora

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "src")


def run(argv: list, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def build_wheel(work: Path) -> Path:
    """Build the wheel from a copy of the package's files (the build writes build/ and *.egg-info)."""
    source = work / "source"
    source.mkdir()
    for name in PACKAGE_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", work / "dist",
         source], cwd=work)
    (wheel,) = (work / "dist").glob("sdlora-*.whl")
    return wheel


def fresh_venv(work: Path, wheel: Path) -> Path:
    """A venv with sdlora installed from `wheel` only; returns its bin/ folder."""
    venv = work / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work)
    (purelib,) = (venv / "lib").glob("python3*/site-packages")
    (purelib / "_borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-deps",
         "--no-index", wheel], cwd=work)
    return venv / "bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("package")
    return fresh_venv(work, build_wheel(work))


def test_the_wheel_is_what_runs_and_reports_the_version(installed, tmp_path):
    where = run([installed / "python", "-c", "import sdlora; print(sdlora.__file__)"], cwd=tmp_path).stdout
    assert Path(where.strip()).is_relative_to(installed.parent), where
    assert run([installed / "sdlora", "--version"], cwd=tmp_path).stdout.strip() == f"sdlora {sdlora.__version__}"


def test_the_ui_command_is_installed_with_its_extra(installed, tmp_path):
    """`sdlora ui` is a command of the installed package, and `pip install sdlora[ui]` names gradio."""
    assert "--listen" in run([installed / "sdlora", "ui", "--help"], cwd=tmp_path).stdout
    script = "import importlib.metadata as m; print(m.metadata('sdlora').get_all('Requires-Dist'))"
    requires = eval(run([installed / "python", "-c", script], cwd=tmp_path).stdout)
    assert any(r.startswith("gradio") and 'extra == "ui"' in r for r in requires), requires


def test_the_installed_package_carries_its_data_and_licences(installed, tmp_path):
    script = ("import importlib.metadata as m, sdlora; d = m.distribution('sdlora'); "
              "print(d.version, d.metadata['License-Expression'], sorted(f.name for f in d.files "
              "if f.name in ('LICENSE', 'NOTICE.md', 'vocab.json', 'merges.txt')))")
    out = run([installed / "python", "-c", script], cwd=tmp_path).stdout.split(" ", 2)
    assert out[:2] == [sdlora.__version__, "Apache-2.0"]
    assert eval(out[2]) == ["LICENSE", "NOTICE.md", "NOTICE.md", "merges.txt", "vocab.json"]


def test_the_demo_runs_from_the_installed_package(installed, tmp_path):
    """The demo's fast path: sd-tiny, the tokenizer and the configs all come from the wheel."""
    run([installed / "sdlora", "demo", "--output", "demo", "--images", "4", "--steps", "2", "--batch-size", "2",
         "--eval-prompts", "1", "--grid-prompts", "1", "--sample-steps", "2", "--threads", "1"], cwd=tmp_path)
    written = {p.name for p in (tmp_path / "demo").rglob("*")}
    assert {"grid.png", "report.html", "metrics.json", "sks-striped.safetensors"} <= written
