"""The `sdlora` command line: a thin dispatcher.

Each command group lives in its own module under `sdlora.cli` and exposes
`register(subparsers)`, which adds its subcommands and sets `handler` on each parser
(a function `handler(args) -> int | None` that calls one library function).
Add a new group by listing its module name in COMMAND_MODULES.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from sdlora import __version__
from sdlora.errors import SdloraError

# Order is the order shown in `sdlora --help`.
COMMAND_MODULES: list[str] = ["dataset", "models", "lora_files", "generate", "train", "demo", "ui"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdlora",
        description="LoRA fine-tuning for Stable Diffusion 1.4: train, generate, compare, evaluate, convert.",
    )
    parser.add_argument("--version", action="version", version=f"sdlora {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"sdlora.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.command is None else 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return int(handler(args) or 0)
    except SdloraError as exc:
        print(f"sdlora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdlora: interrupted", file=sys.stderr)
        return 130
