"""`sdlora ui` refuses a network address without a password, and names the missing extra."""
import sys

import pytest

from sdlora.cli import main
from sdlora.errors import SdloraError
from sdlora.ui.launch import ANY, LOOPBACK, bind


def test_bind_rules():
    assert bind(False, None, False) == (LOOPBACK, None)
    assert bind(True, "me:pw", False) == (ANY, ("me", "pw"))
    assert bind(True, None, True) == (ANY, None)
    for auth in ("me", ":pw", "me:"):
        with pytest.raises(SdloraError, match="USER:PASS"):
            bind(False, auth, False)


def test_listen_without_auth_refuses_with_one_line(capsys):
    assert main(["ui", "--listen"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdlora: error: --listen") and "--auth USER:PASS" in err and "\n" not in err


def test_without_gradio_one_line_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # what `import gradio` sees when it is not installed
    assert main(["ui", "--port", "1"]) == 2
    assert capsys.readouterr().err.strip() == ("sdlora: error: the web UI needs Gradio, which is not installed: "
                                               "pip install 'sdlora[ui]'")
