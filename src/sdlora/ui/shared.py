"""What every tab shares: the settings `sdlora ui` was started with, the page's CSS, and the one
error wrapper every event goes through.

Every event's last output is a status line; a bad input (SdloraError) or any other failure becomes
that line (escaped), never a traceback in the page.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sdlora.config import DEFAULT_MODEL
from sdlora.errors import SdloraError
from sdlora.ui import html, require_gradio

log = logging.getLogger("sdlora.ui")

CSS = """
.sdlora-msg { padding: 6px 10px; border-radius: 6px; margin: 4px 0; }
.sdlora-ok { background: #e8f5e9; } .sdlora-warn { background: #fff8e1; } .sdlora-error { background: #ffebee; }
.sdlora-table { border-collapse: collapse; margin: 6px 0; font-size: 90%; }
.sdlora-table td, .sdlora-table th { border: 1px solid #ddd; padding: 2px 8px; text-align: left; }
.sdlora-pre { white-space: pre-wrap; font-size: 85%; max-height: 420px; overflow: auto; }
"""


@dataclass
class Settings:
    """What `sdlora ui` was started with: defaults for the forms."""

    model: str = DEFAULT_MODEL
    runs_root: str = "runs"
    outputs: str = "outputs"
    examples: str = "examples"


def guarded(fn, outputs: int):
    """`fn` with every failure turned into the status line (its last output); other outputs kept."""
    gr = require_gradio()

    def run(*args):
        try:
            return fn(*args)
        except SdloraError as exc:
            text = str(exc)
        except Exception as exc:  # a bug must still not show a traceback in the page
            log.exception("sdlora ui: %s failed", getattr(fn, "__name__", "event"))
            text = f"unexpected {type(exc).__name__}: {exc} (details in the terminal running sdlora ui)"
        status = html.message(text, "error")
        return status if outputs == 1 else tuple([gr.skip()] * (outputs - 1) + [status])

    run.__name__ = getattr(fn, "__name__", "event")
    return run


def output_dir(root: str, name: str) -> str:
    return str(Path(root) / name)
