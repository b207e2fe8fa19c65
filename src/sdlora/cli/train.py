"""`sdlora train`: flags -> a resolved config -> one training run (sdlora.train.entry.run)."""
from __future__ import annotations

import argparse

EXAMPLES = """examples:
  sdlora train --model CompVis/stable-diffusion-v1-4 --data ./photos --output runs/me
  sdlora train --config my.toml --set train.lr=2e-4 --set lora.rank=8
  sdlora train --resume runs/me            (continue the run from its newest checkpoint)
  accelerate launch --multi_gpu --num_processes 2 -m sdlora train --config my.toml
settings: every key is documented in docs/config.md; --set takes any of them (values are TOML)."""

# flag -> (dotted config key, type, help). Only the common settings; --set reaches every other one.
FLAGS: dict[str, tuple[str, type, str]] = {
    "model": ("model.name", str, "base model: hub id, diffusers folder, .ckpt/.safetensors, or `tiny`"),
    "output": ("save.output_dir", str, "run folder (LoRA, checkpoints, logs, samples, config.toml)"),
    "name": ("save.name", str, "file name stem of the LoRA"),
    "steps": ("train.steps", int, "optimizer steps"),
    "epochs": ("train.epochs", int, "train this many epochs instead of --steps"),
    "rank": ("lora.rank", int, "LoRA rank"),
    "alpha": ("lora.alpha", float, "LoRA alpha (default: rank)"),
    "preset": ("lora.unet_preset", str, "UNet targets: unet-attn or unet-transformer"),
    "lr": ("train.lr", float, "UNet LoRA learning rate"),
    "text-encoder-lr": ("train.text_encoder_lr", float, "text-encoder LoRA learning rate"),
    "batch-size": ("train.batch_size", int, "images per step and process"),
    "grad-accum": ("train.grad_accum", int, "gradient accumulation steps"),
    "resolution": ("data.resolution", int, "training resolution"),
    "seed": ("train.seed", int, "random seed"),
    "optimizer": ("train.optimizer", str, "adamw, adamw8bit or prodigy"),
    "lr-scheduler": ("train.lr_scheduler", str, "constant, cosine, linear or cosine_with_restarts"),
    "mixed-precision": ("train.mixed_precision", str, "auto, no, fp16 or bf16"),
    "save-every": ("save.every_n_steps", int, "checkpoint every N steps"),
    "sample-every": ("validation.every_n_steps", int, "validation samples every N steps"),
}
SWITCHES: dict[str, tuple[str, str]] = {
    "gradient-checkpointing": ("train.gradient_checkpointing", "recompute activations: less memory, slower"),
    "train-text-encoder": ("lora.train_text_encoder", "also train a text-encoder LoRA"),
    "conv": ("lora.conv", "also adapt convolutions (LoCon)"),
    "dora": ("lora.dora", "weight-decomposed LoRA (DoRA)"),
    "compile": ("train.compile", "torch.compile the UNet (GPU speed; compiles for a while first)"),
}


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a LoRA", description="Train a LoRA on SD 1.x.",
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", "-c", metavar="TOML", help="run config file (see docs/config.md)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any setting, e.g. --set train.lr=2e-4 (repeatable)")
    p.add_argument("--data", action="append", default=[], metavar="DIR",
                   help="image folder; each one becomes a [[data.sources]] entry (repeatable)")
    p.add_argument("--prompt", dest="prompts", action="append", metavar="TEXT",
                   help="validation prompt sampled during training (repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR|CHECKPOINT|latest",
                   help="continue a run: its folder, a checkpoints/step-N folder, or `latest` in --output")
    for flag, (key, kind, text) in FLAGS.items():
        p.add_argument(f"--{flag}", dest=key, type=kind, metavar=flag.split("-")[-1].upper(), help=f"{text} ({key})")
    for flag, (key, text) in SWITCHES.items():
        p.add_argument(f"--{flag}", dest=key, action="store_true", default=None, help=f"{text} ({key})")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from sdlora.train.entry import run

    keys = [key for key, *_ in FLAGS.values()] + [key for key, _ in SWITCHES.values()]
    flags = {key: getattr(args, key) for key in keys}
    if args.prompts:
        flags["validation.prompts"] = args.prompts
    result = run(args.config, args.sets, flags, args.data, args.resume)
    return 130 if result.status == "interrupted" else 0
