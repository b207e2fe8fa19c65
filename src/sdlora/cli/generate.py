"""`sdlora generate`, `sdlora compare`, `sdlora evaluate`: flags -> a job -> one library call."""
from __future__ import annotations

import argparse
from pathlib import Path

from sdlora.generate.prompts import PromptSpec, check_spec, collect_prompts
from sdlora.generate.schedulers import DEFAULT_SCHEDULER, SCHEDULERS

SYNTAX = ("Prompt syntax (also for each line of --prompts FILE): `a cat --n blurry --d 42 --s 30 --l 7.5 "
          "--w 512 --h 512 --ss euler_a` sets negative prompt, seed, steps, CFG, width, height, scheduler "
          "for that prompt (kohya's sample-prompt options).")


def _weights(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 0,0.5,1.0, got {text!r}") from None


def _lora(text: str):
    from sdlora.generate.loras import parse_lora_arg

    return parse_lora_arg(text)


def add_common(parser: argparse.ArgumentParser, out: str) -> None:
    """Model, prompts and sampling settings shared by the three commands."""
    from sdlora.generate.job import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="hub id, diffusers folder, .ckpt/.safetensors file, or `tiny` (default: %(default)s)")
    parser.add_argument("--prompt", action="append", metavar="TEXT", help="a prompt (repeatable); see the syntax below")
    parser.add_argument("--prompts", metavar="FILE", help="prompt file: one prompt per line, `#` comments")
    parser.add_argument("--negative-prompt", default="", metavar="TEXT", help="default negative prompt")
    parser.add_argument("--seed", type=int, default=42, help="seed of the first image of each prompt (default: 42)")
    parser.add_argument("--steps", type=int, default=30, help="sampling steps (default: 30)")
    parser.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale (default: 7.5)")
    parser.add_argument("--width", type=int, default=512, help="image width, a multiple of 8 (default: 512)")
    parser.add_argument("--height", type=int, default=512, help="image height, a multiple of 8 (default: 512)")
    parser.add_argument("--scheduler", default=DEFAULT_SCHEDULER, choices=list(SCHEDULERS),
                        help="sampler (default: %(default)s, SD 1.4's own)")
    parser.add_argument("--num-images", type=int, default=1, help="images per prompt, seeds seed, seed+1, ... (default: 1)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per pipeline call (default: 1)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="auto: fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when available)")
    parser.add_argument("--out", type=Path, default=Path(out), help="output folder (default: %(default)s)")


def prompts(args: argparse.Namespace) -> list[PromptSpec]:
    defaults = check_spec(PromptSpec("", args.negative_prompt, args.seed, args.steps, args.cfg, args.width,
                                     args.height, args.scheduler), "command line")
    return collect_prompts(args.prompt, args.prompts, defaults)


def run_generate(args: argparse.Namespace) -> int:
    from sdlora.generate.job import GenerateJob, generate

    result = generate(GenerateJob(prompts(args), args.out, args.model, args.lora or [], args.num_images,
                                  args.batch_size, args.merge, args.dtype, args.device, not args.no_contact_sheet))
    sheet = f", contact sheet {result.contact_sheet}" if result.contact_sheet else ""
    print(f"{len(result.images)} images in {args.out}{sheet}")
    return 0


def compare_job(args: argparse.Namespace):
    from sdlora.evaluate.compare import CompareJob

    return CompareJob(prompts(args), args.lora or [], args.out, args.model, args.weights, args.num_images,
                      args.batch_size, args.dtype, args.device)


def run_compare(args: argparse.Namespace) -> int:
    from sdlora.evaluate.compare import compare

    result = compare(compare_job(args))
    print(f"grid {result.grid_path}, report {result.extra['report']}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from sdlora.evaluate.evaluation import EvaluateJob, evaluate

    result = evaluate(EvaluateJob(compare_job(args), args.train_images, args.reference, args.clip_model,
                                  args.dino_model, args.fid_features))
    print(f"metrics {result.json_path}, report {result.report_path}, grid {result.compare.grid_path}")
    return 0


LORA_HELP = "LoRA file with optional weight, FILE[:WEIGHT] (repeatable; kohya, diffusers or sdlora file)"


def _add_sweep(sub, required: bool) -> None:
    sub.add_argument("--lora", action="append", type=_lora, required=required, metavar="FILE[:WEIGHT]", help=LORA_HELP)
    sub.add_argument("--weights", type=_weights, metavar="W,W,...",
                     help="LoRA weights to compare, e.g. 0.5,1.0 (0 is the base column; default: each file's weight)")


def register(subparsers) -> None:
    from sdlora.evaluate.features import DEFAULT_CLIP, DEFAULT_DINO

    gen = subparsers.add_parser("generate", help="generate images, optionally with LoRA files", epilog=SYNTAX)
    add_common(gen, "outputs/generate")
    gen.add_argument("--lora", action="append", type=_lora, metavar="FILE[:WEIGHT]", help=LORA_HELP)
    gen.add_argument("--merge", action="store_true", help="fold the LoRAs into the weights (no per-step overhead)")
    gen.add_argument("--no-contact-sheet", action="store_true", help="do not write contact_sheet.png")
    gen.set_defaults(handler=run_generate)

    cmp = subparsers.add_parser("compare", help="base model vs each LoRA: labelled grid + HTML report", epilog=SYNTAX)
    add_common(cmp, "outputs/compare")
    _add_sweep(cmp, required=True)
    cmp.set_defaults(handler=run_compare)

    ev = subparsers.add_parser("evaluate", help="compare, plus CLIP-T, CLIP-I, DINO (and FD/KID) metrics", epilog=SYNTAX)
    add_common(ev, "outputs/evaluate")
    _add_sweep(ev, required=False)
    ev.add_argument("--train-images", type=Path, metavar="DIR", help="training images, for CLIP-I and DINO")
    ev.add_argument("--reference", type=Path, metavar="DIR", help="reference images for FD/KID (optional)")
    ev.add_argument("--clip-model", default=DEFAULT_CLIP,
                    help="CLIP hub id (read from the local cache) or folder (default: %(default)s)")
    ev.add_argument("--dino-model", default=DEFAULT_DINO,
                    help="DINO hub id (read from the local cache) or folder (default: %(default)s)")
    ev.add_argument("--fid-features", default="dino", choices=["dino", "clip"], help="features FD/KID are computed on")
    ev.set_defaults(handler=run_evaluate)
