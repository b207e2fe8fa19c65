"""`sdlora demo`: the main job on the bundled sd-tiny (dataset, LoRA training, before/after grid,
report, metrics) in a few minutes on a CPU. Flags map one to one onto DemoSettings, which checks them
(the few it does not check, threads and seed, are checked while parsing)."""
from __future__ import annotations

import argparse

from sdlora.cli import argtypes as T

EXAMPLES = """examples:
  sdlora demo                                  (everything into runs/demo)
  sdlora demo --output out/demo --steps 150    (a shorter run)
  sdlora demo --set lora.train_text_encoder=true   (any `sdlora train` setting)
outputs: data/ (images + captions), train/ (LoRA in kohya and diffusers formats, config.toml, train.log),
grid.png, report.html, compare.json, images/, metrics.json."""

# flag -> (DemoSettings field, type, help)
FLAGS: dict[str, tuple[str, object, str]] = {
    "output": ("output", T.output_dir, "Output folder"),
    "images": ("images", int, "Training images"),
    "steps": ("steps", int, "Optimizer steps"),
    "batch-size": ("batch_size", int, "Images per step"),
    "rank": ("rank", int, "LoRA rank"),
    "lr": ("lr", float, "Learning rate"),
    "caption-dropout": ("caption_dropout", float, "Share of steps trained on an empty caption"),
    "eval-prompts": ("eval_prompts", int, "Prompts scored by the checker (40: every colour x shape)"),
    "eval-rounds": ("eval_rounds", int, "Seeds per scored prompt"),
    "grid-prompts": ("grid_prompts", int, "Trigger prompts in the before/after grid"),
    "guidance": ("guidance", float, "Classifier-free guidance of every sample (sd-tiny wants ~2)"),
    "sample-steps": ("sample_steps", int, "PNDM sampling steps"),
    "seed": ("seed", T.seed, "Training seed"),
    "threads": ("threads", T.positive_int, "Torch CPU threads; 1 is best on a busy machine"),
}


def register(subparsers) -> None:
    from sdlora.tiny.demo import DemoSettings

    defaults = DemoSettings()
    p = subparsers.add_parser("demo", help="Train a style LoRA on the bundled sd-tiny and report it (CPU, minutes).",
                              description="The main job end to end on the bundled sd-tiny: a striped-style "
                                          "dataset, a LoRA trained with `sdlora train`, a before/after grid, an "
                                          "HTML report and checker metrics.",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, (name, kind, text) in FLAGS.items():
        p.add_argument(f"--{flag}", dest=name, type=kind, default=getattr(defaults, name),
                       metavar=flag.split("-")[-1].upper(), help=f"{text} (default: %(default)s).")
    p.add_argument("--no-conv", dest="conv", action="store_false", help="Adapt attention/projections only, no LoCon.")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="Any `sdlora train` setting, e.g. --set lora.alpha=4 (repeatable).")
    # A run folder: demo and train own what is in it (train resumes it), so no --overwrite rule applies.
    p.set_defaults(handler=run_demo_command, run_folder=True)


def settings(args: argparse.Namespace):
    """The DemoSettings the parsed flags ask for."""
    from sdlora.tiny.demo import DemoSettings

    names = [name for name, _, _ in FLAGS.values()] + ["conv", "sets"]
    return DemoSettings(**{name: getattr(args, name) for name in names})


def run_demo_command(args: argparse.Namespace) -> int:
    from sdlora.tiny.demo import run_demo

    run_demo(settings(args))
    return 0
