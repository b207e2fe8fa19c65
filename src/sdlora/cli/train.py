"""`sdlora train`: flags -> a resolved config -> one training run (sdlora.train.entry.run)."""
from __future__ import annotations

import argparse

from sdlora.cli import argtypes as T

EXAMPLES = """examples:
  sdlora train --model CompVis/stable-diffusion-v1-4 --data ./photos --output runs/me
  sdlora train --config my.toml --set train.lr=2e-4 --set lora.rank=8
  sdlora train --resume runs/me            (continue the run from its newest checkpoint)
  accelerate launch --multi_gpu --num_processes 2 -m sdlora train --config my.toml
settings: every key is documented in docs/config.md; --set takes any of them (values are TOML)."""

# flag -> (dotted config key, type, help). Only the common settings; --set reaches every other one.
FLAGS: dict[str, tuple[str, object, str]] = {
    "model": ("model.name", str, "Base model: hub id, diffusers folder, .ckpt/.safetensors, or `tiny`"),
    "output": ("save.output_dir", T.output_dir, "Run folder (LoRA, checkpoints, logs, samples, config.toml)"),
    "name": ("save.name", str, "File name stem of the LoRA"),
    "steps": ("train.steps", int, "Optimizer steps"),
    "epochs": ("train.epochs", int, "Train this many epochs instead of --steps"),
    "rank": ("lora.rank", int, "LoRA rank"),
    "alpha": ("lora.alpha", float, "LoRA alpha (default: rank)"),
    "preset": ("lora.unet_preset", str, "UNet targets: unet-attn or unet-transformer"),
    "lr": ("train.lr", float, "UNet LoRA learning rate"),
    "text-encoder-lr": ("train.text_encoder_lr", float, "Text-encoder LoRA learning rate"),
    "batch-size": ("train.batch_size", int, "Images per step and process"),
    "grad-accum": ("train.grad_accum", int, "Gradient accumulation steps"),
    "resolution": ("data.resolution", int, "Training resolution"),
    "seed": ("train.seed", int, "Random seed"),
    "optimizer": ("train.optimizer", str, "Optimizer: adamw, adamw8bit, prodigy, lion, adafactor, adamw_schedulefree "
                  "or a module.Class path"),
    "lr-scheduler": ("train.lr_scheduler", str, "Learning-rate schedule: constant, cosine, linear or cosine_with_restarts"),
    "mixed-precision": ("train.mixed_precision", str, "Mixed precision: auto, fp32 (also `no`), fp16 or bf16"),
    "save-every": ("save.every_n_steps", int, "Checkpoint every N steps"),
    "sample-every": ("validation.every_n_steps", int, "Validation samples every N steps"),
}
SWITCHES: dict[str, tuple[str, str]] = {
    "gradient-checkpointing": ("train.gradient_checkpointing", "Recompute activations: less memory, slower"),
    "train-text-encoder": ("lora.train_text_encoder", "Also train a text-encoder LoRA"),
    "conv": ("lora.conv", "Also adapt convolutions (LoCon)"),
    "dora": ("lora.dora", "Weight-decomposed LoRA (DoRA)"),
    "compile": ("train.compile", "Compile the UNet with torch.compile (GPU speed; compiles for a while first)"),
}
# Precision names the CLI accepts for train.mixed_precision: `fp32` (generate's name) means `no`.
PRECISION_SYNONYMS = {"fp32": "no"}


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="Train a LoRA.", description="Train a LoRA on SD 1.x.",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", metavar="TOML", type=T.input_file_of("config file"),
                   help="Run config file (see docs/config.md).")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="Override any setting, e.g. --set train.lr=2e-4 (repeatable).")
    p.add_argument("--data", action="append", default=[], metavar="DIR", type=T.input_dir,
                   help="Image folder; each one becomes a [[data.sources]] entry (repeatable).")
    p.add_argument("--sample-prompt", "--prompt", dest="prompts", action="append", metavar="TEXT",
                   help="Validation prompt sampled during training (repeatable); captions come from the data.")
    p.add_argument("--resume", metavar="RUN_DIR|CHECKPOINT|latest",
                   help="Continue a run: its folder, a checkpoints/step-N folder, or `latest` in --output.")
    for flag, (key, kind, text) in FLAGS.items():
        p.add_argument(f"--{flag}", dest=key, type=kind, metavar=flag.split("-")[-1].upper(), help=f"{text} ({key}).")
    for flag, (key, text) in SWITCHES.items():
        p.add_argument(f"--{flag}", dest=key, action="store_true", default=None, help=f"{text} ({key}).")
    # A run folder: an existing one is resumed or refused by the trainer, so no --overwrite rule applies.
    p.set_defaults(handler=run_train, run_folder=True)


def run_train(args: argparse.Namespace) -> int:
    from sdlora.train.entry import run

    result = run(str(args.config) if args.config else None, args.sets, train_flags(args),
                 [str(path) for path in args.data], args.resume)
    return 130 if result.status == "interrupted" else 0


def train_flags(args: argparse.Namespace) -> dict:
    """The config keys the flags set (None: not given), in the config's own spelling."""
    keys = [key for key, *_ in FLAGS.values()] + [key for key, _ in SWITCHES.values()]
    flags = {key: getattr(args, key) for key in keys}
    precision = flags["train.mixed_precision"]
    flags["train.mixed_precision"] = PRECISION_SYNONYMS.get(precision, precision)
    if flags["save.output_dir"] is not None:
        flags["save.output_dir"] = str(flags["save.output_dir"])
    if args.prompts:
        flags["validation.prompts"] = args.prompts
    return flags
