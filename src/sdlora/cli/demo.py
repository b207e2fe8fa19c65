"""`sdlora demo`: the main job on the bundled sd-tiny (dataset, LoRA training, before/after grid,
report, metrics) in a few minutes on a CPU. Flags map one to one onto DemoSettings."""
from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  sdlora demo                                  (everything into runs/demo)
  sdlora demo --output out/demo --steps 150    (a shorter run)
  sdlora demo --set lora.train_text_encoder=true   (any `sdlora train` setting)
outputs: data/ (images + captions), train/ (LoRA in kohya and diffusers formats, config.toml, train.log),
grid.png, report.html, compare.json, images/, metrics.json."""

# flag -> (DemoSettings field, type, help)
FLAGS: dict[str, tuple[str, type, str]] = {
    "output": ("output", Path, "output folder"),
    "images": ("images", int, "training images"),
    "steps": ("steps", int, "optimizer steps"),
    "batch-size": ("batch_size", int, "images per step"),
    "rank": ("rank", int, "LoRA rank"),
    "lr": ("lr", float, "learning rate"),
    "caption-dropout": ("caption_dropout", float, "share of steps trained on an empty caption"),
    "eval-prompts": ("eval_prompts", int, "prompts scored by the checker (40: every colour x shape)"),
    "eval-rounds": ("eval_rounds", int, "seeds per scored prompt"),
    "grid-prompts": ("grid_prompts", int, "trigger prompts in the before/after grid"),
    "guidance": ("guidance", float, "classifier-free guidance of every sample (sd-tiny wants ~2)"),
    "sample-steps": ("sample_steps", int, "PNDM sampling steps"),
    "seed": ("seed", int, "training seed"),
    "threads": ("threads", int, "torch CPU threads; 1 is best on a busy machine"),
}


def register(subparsers) -> None:
    from sdlora.tiny.demo import DemoSettings

    defaults = DemoSettings()
    p = subparsers.add_parser("demo", help="train a style LoRA on the bundled sd-tiny and report it (CPU, minutes)",
                              description="The main job end to end on the bundled sd-tiny: a striped-style "
                                          "dataset, a LoRA trained with `sdlora train`, a before/after grid, an "
                                          "HTML report and checker metrics.",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, (name, kind, text) in FLAGS.items():
        p.add_argument(f"--{flag}", dest=name, type=kind, default=getattr(defaults, name),
                       metavar=flag.split("-")[-1].upper(), help=f"{text} (default: %(default)s)")
    p.add_argument("--no-conv", dest="conv", action="store_false", help="adapt attention/projections only, no LoCon")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="any `sdlora train` setting, e.g. --set lora.alpha=4 (repeatable)")
    p.set_defaults(handler=run_demo_command)


def settings(args: argparse.Namespace):
    """The DemoSettings the parsed flags ask for."""
    from sdlora.tiny.demo import DemoSettings

    names = [name for name, _, _ in FLAGS.values()] + ["conv", "sets"]
    return DemoSettings(**{name: getattr(args, name) for name in names})


def run_demo_command(args: argparse.Namespace) -> int:
    from sdlora.tiny.demo import run_demo

    run_demo(settings(args))
    return 0
