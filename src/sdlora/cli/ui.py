"""`sdlora ui`: the local web app (needs the `ui` extra: pip install 'sdlora[ui]')."""
from __future__ import annotations

import argparse

from sdlora.cli import argtypes as T


def register(subparsers) -> None:
    p = subparsers.add_parser("ui", help="The web UI: dataset, training, runs, compare, generate, files.",
                              description="Serve sdlora's web UI (Gradio) on this machine.")
    p.add_argument("--port", type=T.int_range(1, 65535), default=7860, help="Port (default: %(default)s).")
    p.add_argument("--listen", action="store_true", help="Serve on every network address (0.0.0.0), not only 127.0.0.1.")
    p.add_argument("--auth", metavar="USER:PASS", help="Ask for this user name and password (needed with --listen).")
    p.add_argument("--insecure-no-auth", action="store_true", help="Allow --listen without --auth.")
    p.add_argument("--model", default=None, help="Base model the forms start with (default: SD 1.4's hub id).")
    p.add_argument("--runs", default="runs", metavar="DIR", help="Folder of training runs (default: %(default)s).")
    p.add_argument("--outputs", default="outputs", metavar="DIR", help="Folder for generated images (default: %(default)s).")
    p.add_argument("--examples", default="examples", metavar="DIR", help="Recipes folder (default: %(default)s).")
    p.set_defaults(handler=run_ui)


def run_ui(args: argparse.Namespace) -> int:
    from sdlora.ui.launch import bind, serve

    host, auth = bind(args.listen, args.auth, args.insecure_no_auth)  # refuse before importing gradio
    from sdlora.ui.shared import Settings

    settings = Settings(runs_root=args.runs, outputs=args.outputs, examples=args.examples)
    if args.model:
        settings.model = args.model
    serve(settings, host, args.port, auth)
    return 0
