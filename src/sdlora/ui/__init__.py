"""`sdlora ui`: a local web app (Gradio) over the same library functions as the CLI.

The handler modules (`dataset`, `trainform`, `runner`, `runstate`, `jobs`, `html`) are plain Python
and never import Gradio, so they are tested directly; `app` lays them out as tabs and `launch` serves
the page (loopback by default, no telemetry, no file outside the folders the user works on).
"""
from __future__ import annotations

from sdlora.errors import SdloraError

INSTALL_HINT = "the web UI needs Gradio, which is not installed: pip install 'sdlora[ui]'"


def require_gradio():
    """The gradio module, or SdloraError naming the install command."""
    try:
        import gradio
    except ImportError:
        raise SdloraError(INSTALL_HINT) from None
    return gradio
