"""`sdlora ui`: the local web app (needs the `ui` extra: pip install 'sdlora[ui]')."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("ui", help="the web UI: dataset, training, runs, compare, generate, files",
                              description="Serve sdlora's web UI (Gradio) on this machine.")
    p.add_argument("--port", type=int, default=7860, help="port (default: %(default)s)")
    p.add_argument("--listen", action="store_true", help="serve on every network address (0.0.0.0), not only 127.0.0.1")
    p.add_argument("--auth", metavar="USER:PASS", help="ask for this user name and password (needed with --listen)")
    p.add_argument("--insecure-no-auth", action="store_true", help="allow --listen without --auth")
    p.add_argument("--model", default=None, help="base model the forms start with (default: SD 1.4's hub id)")
    p.add_argument("--runs", default="runs", metavar="DIR", help="folder of training runs (default: %(default)s)")
    p.add_argument("--outputs", default="outputs", metavar="DIR", help="folder for generated images (default: %(default)s)")
    p.add_argument("--examples", default="examples", metavar="DIR", help="recipes folder (default: %(default)s)")
    p.set_defaults(handler=run_ui)


def run_ui(args: argparse.Namespace) -> int:
    from sdlora.ui.launch import bind, serve

    host, auth = bind(args.listen, args.auth, args.insecure_no_auth)  # refuse before importing gradio
    from sdlora.ui.app import Settings

    settings = Settings(runs_root=args.runs, outputs=args.outputs, examples=args.examples)
    if args.model:
        settings.model = args.model
    serve(settings, host, args.port, auth)
    return 0
