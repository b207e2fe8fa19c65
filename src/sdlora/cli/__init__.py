"""The `sdlora` command line: a thin dispatcher.

Each command group lives in its own module under `sdlora.cli` and exposes
`register(subparsers)`, which adds its subcommands and sets `handler` on each parser
(a function `handler(args) -> int | None` that calls one library function).
Add a new group by listing its module name in COMMAND_MODULES.

Registering imports no torch, diffusers or transformers (handlers import what they need), so
`sdlora --help` and `--version` answer at once. Parse errors are one line, like every other error.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from sdlora import __version__
from sdlora.errors import SdloraError

# Order is the order shown in `sdlora --help`.
COMMAND_MODULES: list[str] = ["dataset", "models", "lora_files", "tools", "blocks", "generate", "train", "demo", "ui"]


class Commands(argparse._SubParsersAction):
    """Subcommands that remember their one-line help (`parser.help`), for `--help` and for tests."""

    def add_parser(self, name: str, **kwargs):
        parser = super().add_parser(name, **kwargs)
        parser.help = kwargs.get("help")
        parser.set_defaults(command_parser=parser)  # the innermost command's parser wins
        return parser


class Parser(argparse.ArgumentParser):
    """argparse with sdlora's error format (one `sdlora: error:` line naming the command, rc 2) that
    keeps what was added to it: `arguments` (every Action) and `commands` (name -> sub-parser)."""

    def __init__(self, *args, **kwargs):
        self.arguments: list[argparse.Action] = []
        self.commands: dict[str, Parser] = {}
        self.help: str | None = None
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.arguments.append(action)
        return action

    def add_subparsers(self, **kwargs):
        action = super().add_subparsers(action=Commands, **kwargs)
        self.commands = action.choices
        return action

    def leaves(self, path: tuple[str, ...] = ()):
        """(command path, parser) for every command below this parser that runs a handler."""
        for name, sub in self.commands.items():
            if sub.commands:
                yield from sub.leaves((*path, name))
            else:
                yield (*path, name), sub

    def check(self, args: argparse.Namespace) -> None:
        """Check the file-system side of every path argument (argtypes.PathType) before any work;
        SdloraError naming the argument and what is wrong."""
        for action in self.arguments:
            values = getattr(args, action.dest, None)
            if not hasattr(action.type, "check") or values is None:
                continue
            for value in values if isinstance(values, list) else [values]:
                try:
                    action.type.check(value)
                except argparse.ArgumentTypeError as exc:
                    name = "/".join(action.option_strings) or action.metavar or action.dest
                    command = self.prog.removeprefix("sdlora").strip()
                    raise SdloraError(f"{command}: argument {name}: {exc}") from None

    def error(self, message: str):
        command = self.prog.removeprefix("sdlora").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"sdlora: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    from sdlora import quiet

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    quiet.install()
    try:
        args.command_parser.check(args)
        code = int(handler(args) or 0)
        sys.stdout.flush()  # a closed pipe (`sdlora info F | head`) is found here, not at exit
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to say to the reader
        return 141  # as a shell reports a command ended by SIGPIPE
    except SdloraError as exc:
        print(f"sdlora: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdlora: interrupted", file=sys.stderr)
        return 130
