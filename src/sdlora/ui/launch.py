"""Serving the page: loopback unless asked, a password (or an explicit opt-out) on a network
address, no telemetry or update checks, and no file served but the app's own and the results of
what the user asked for (gradio's `allowed_paths` stays empty: shown files are copied to its cache).
"""
from __future__ import annotations

import os

from sdlora.errors import SdloraError
from sdlora.ui import require_gradio

LOOPBACK, ANY = "127.0.0.1", "0.0.0.0"
QUIET = {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_SSR_MODE": "False",
         "GRADIO_RUN_HISTORY": "False", "DO_NOT_TRACK": "1"}


def bind(listen: bool, auth: str | None, insecure_no_auth: bool) -> tuple[str, tuple[str, str] | None]:
    """(host, (user, password) or None); refuses a network address without a password."""
    pair = None
    if auth is not None:
        user, sep, password = auth.partition(":")
        if not sep or not user or not password:
            raise SdloraError("--auth: expected USER:PASS, e.g. --auth me:a-long-password")
        pair = (user, password)
    if not listen:
        return LOOPBACK, pair
    if pair is None and not insecure_no_auth:
        raise SdloraError("--listen serves the UI to every machine that can reach this one: add --auth USER:PASS "
                          "(or --insecure-no-auth if the network is yours alone)")
    return ANY, pair


def quiet_environment() -> None:
    """No analytics, version checks or share links (set before gradio is imported)."""
    for key, value in QUIET.items():
        os.environ[key] = value


def serve(settings, host: str, port: int, auth: tuple[str, str] | None, *, block: bool = True):
    """Build and launch the app; when not blocking, returns the running Blocks (`.local_url`, `.close()`)."""
    quiet_environment()
    require_gradio()
    from sdlora.ui.app import build_app
    from sdlora.ui.shared import CSS

    app = build_app(settings)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, auth=auth, share=False, inbrowser=False,
                      allowed_paths=[], footer_links=[], ssr_mode=False, mcp_server=False, css=CSS,
                      prevent_thread_lock=not block, quiet=not block, show_error=False)
    return app
