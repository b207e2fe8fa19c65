import subprocess
import sys

from sdlora import __version__
from sdlora.cli import build_parser, main


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"sdlora {__version__}"


def test_help_lists_every_registered_command():
    help_text = build_parser().format_help()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert name in help_text


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "sdlora", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and __version__ in out.stdout
