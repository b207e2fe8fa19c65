"""`sdlora generate`, `sdlora compare`, `sdlora evaluate`: flags -> a job -> one library call.

Only light modules are imported here; the model code loads inside the handlers."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from sdlora.cli import argtypes as T
from sdlora.config import DEFAULT_MODEL
from sdlora.evaluate.features import DEFAULT_CLIP, DEFAULT_DINO
from sdlora.generate.prompts import PromptSpec, check_spec, collect_prompts
from sdlora.generate.schedulers import DEFAULT_SCHEDULER, SCHEDULERS

log = logging.getLogger(__name__)
SYNTAX = ("Prompt syntax (also for each line of --prompts FILE): `a cat --n blurry --d 42 --s 30 --l 7.5 "
          "--w 512 --h 512 --ss euler_a` sets negative prompt, seed, steps, guidance, width, height, scheduler "
          "for that prompt (kohya's sample-prompt options).")
LORA_HELP = ("LoRA file with an optional weight and block weights, FILE[:WEIGHT][:lbw=PRESET|W,W,...] (repeatable; "
             "kohya, diffusers or sdlora file; lbw: a preset such as OUTALL, or 17 or 26 block weights).")
DTYPES = ["auto", "fp32", "fp16", "bf16"]


def _weights(text: str) -> list[float]:
    parse = T.float_range(0.0)
    return [parse(part) for part in text.split(",") if part.strip()]


def add_common(parser: argparse.ArgumentParser, out: str) -> None:
    """Model, prompts, sampling and output settings shared by the three commands."""
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="Hub id, diffusers folder, .ckpt/.safetensors file, or `tiny` (default: %(default)s).")
    parser.add_argument("--prompt", action="append", metavar="TEXT", help="A prompt (repeatable); see the syntax below.")
    parser.add_argument("--prompts", type=T.input_file, metavar="FILE",
                        help="Prompt file: one prompt per line, `#` starts a comment.")
    parser.add_argument("--negative-prompt", default="", metavar="TEXT", help="Default negative prompt.")
    parser.add_argument("--seed", type=T.seed, default=42,
                        help=f"Seed of the first image of each prompt, 0 to {T.SEED_MAX} (default: %(default)s).")
    parser.add_argument("--sample-steps", "--steps", dest="sample_steps", type=T.positive_int, default=30,
                        metavar="N", help="Sampling steps (default: %(default)s).")
    parser.add_argument("--guidance", "--cfg", dest="guidance", type=T.float_range(0.0), default=7.5,
                        metavar="SCALE", help="Classifier-free guidance scale (default: %(default)s).")
    parser.add_argument("--width", type=T.positive_int, default=512, help="Image width, a multiple of 8 (default: 512).")
    parser.add_argument("--height", type=T.positive_int, default=512, help="Image height, a multiple of 8 (default: 512).")
    parser.add_argument("--scheduler", default=DEFAULT_SCHEDULER, choices=list(SCHEDULERS),
                        help="Sampler (default: %(default)s, SD 1.4's own).")
    parser.add_argument("--num-images", type=T.positive_int, default=1,
                        help="Images per prompt, seeds seed, seed+1, ... (default: 1).")
    parser.add_argument("--batch-size", type=T.positive_int, default=1, help="Images per pipeline call, across prompts sampled alike (default: 1; raise it on a CPU "
                             "or a large GPU: one call for many small images is faster).")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="Weights' precision; auto: fp16 on CUDA, fp32 on CPU.")
    parser.add_argument("--device", default=None, help="Device: cpu, cuda, cuda:1 (default: CUDA when available).")
    parser.add_argument("--output", "--out", dest="output", type=T.output_dir, default=Path(out), metavar="DIR",
                        help="Output folder (default: %(default)s); when it holds an earlier run's files, the "
                             "next free DIR-2, DIR-3, ... is used instead.")
    parser.add_argument("--overwrite", action="store_true", help="Write into --output even if it holds earlier files.")


def prompts(args: argparse.Namespace) -> list[PromptSpec]:
    """The run's prompts, checked (seeds of every image in range) before anything loads."""
    defaults = check_spec(PromptSpec("", args.negative_prompt, args.seed, args.sample_steps, args.guidance, args.width,
                                     args.height, args.scheduler), "command line")
    specs = collect_prompts(args.prompt, args.prompts, defaults)
    for spec in specs:
        check_spec(spec.replace(seed=spec.seed + args.num_images - 1), f"{spec.prompt!r} with --num-images")
    return specs


def output_dir(args: argparse.Namespace) -> Path:
    """--output, or the next free numbered folder when it holds an earlier run (see argtypes.fresh_output_dir)."""
    out = T.fresh_output_dir(args.output, args.overwrite)
    if out != args.output:
        log.info("%s holds an earlier run's files; writing to %s (--overwrite writes into %s)", args.output, out,
                 args.output)
    return out


def noise_settings(args: argparse.Namespace):
    """--prediction-type, --zero-terminal-snr, --timestep-spacing as NoiseSettings (`auto`: not said)."""
    from sdlora.generate.prediction import NoiseSettings

    said = {"auto": None, "on": True, "off": False}
    return NoiseSettings(said.get(args.prediction_type, args.prediction_type), said[args.zero_terminal_snr],
                         said.get(args.timestep_spacing, args.timestep_spacing))


def run_generate(args: argparse.Namespace) -> int:
    from sdlora.generate.job import GenerateJob, generate

    specs, out = prompts(args), output_dir(args)
    result = generate(GenerateJob(specs, out, args.model, args.lora or [], args.num_images, args.batch_size,
                                  args.merge, args.dtype, args.device, not args.no_contact_sheet, noise_settings(args)))
    sheet = f", contact sheet {result.contact_sheet}" if result.contact_sheet else ""
    print(f"{len(result.images)} images in {out}{sheet}")
    return 0


def compare_jobs(args: argparse.Namespace) -> list:
    """One CompareJob per --sweep (several: each in its own numbered subfolder), all checked first."""
    from sdlora.errors import SdloraError
    from sdlora.evaluate.compare import CompareJob
    from sdlora.evaluate.sweep import parse_sweep

    sweeps = [parse_sweep(text) for text in args.sweep or []] or [None]
    if any(s is not None and s.kind == "weight" for s in sweeps) and args.weights:
        raise SdloraError("--weights and --sweep weight=... say the same thing: give one of them")
    specs, out = prompts(args), output_dir(args)
    dirs = [out] if len(sweeps) == 1 else [out / f"{i}-{s.kind}" for i, s in enumerate(sweeps, 1)]
    return [CompareJob(specs, args.lora or [], folder, args.model, args.weights, args.num_images, args.batch_size,
                       args.dtype, args.device, sweep) for sweep, folder in zip(sweeps, dirs)]


def compare_job(args: argparse.Namespace):
    from sdlora.errors import SdloraError

    jobs = compare_jobs(args)
    if len(jobs) > 1:
        raise SdloraError("evaluate takes one --sweep (compare takes several)")
    return jobs[0]


def run_compare(args: argparse.Namespace) -> int:
    from sdlora.errors import SdloraError
    from sdlora.evaluate.compare import compare
    from sdlora.formats import apply
    from sdlora.generate.job import load_model

    if not args.lora and not args.sweep:
        raise SdloraError("compare: give --lora FILE (repeatable), or --sweep checkpoint=RUN_DIR / lora=FILE,FILE")
    jobs = compare_jobs(args)
    components = load_model(args.model, args.dtype, args.device) if len(jobs) > 1 else None  # loaded once
    for job in jobs:
        result = compare(job, components)
        if components is not None and apply.adapters(components):
            apply.detach(components)  # the next sweep attaches its own LoRAs
        print(f"grid {result.grid_path}, report {result.extra['report']}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from sdlora.evaluate.evaluation import EvaluateJob, evaluate

    result = evaluate(EvaluateJob(compare_job(args), args.train_images, args.reference, args.clip_model,
                                  args.dino_model, args.fid_features))
    print(f"metrics {result.json_path}, report {result.report_path}, grid {result.compare.grid_path}")
    return 0


def _add_sweep(sub) -> None:
    sub.add_argument("--lora", action="append", type=T.lora_arg, metavar="FILE[:WEIGHT][:lbw=...]", help=LORA_HELP)
    sub.add_argument("--weights", type=_weights, metavar="W,W,...",
                     help="LoRA weights to compare, e.g. 0.5,1.0 (0 is the base column; default: each file's weight).")
    sub.add_argument("--sweep", action="append", metavar="KIND=VALUES",
                     help="X/Y grid: rows are the prompts, columns one sweep (base column first, same seeds): "
                          "weight=0,0.4,0.7,1.0 | checkpoint=RUN_DIR (its checkpoints in step order) | "
                          "lora=A.safetensors,B.safetensors | lbw=OUTALL,INALL (vectors separated by ;) | "
                          "sampler=euler_a,ddim | cfg=4,7.5,10. compare: repeatable, one grid per sweep.")


def register(subparsers) -> None:
    gen = subparsers.add_parser("generate", help="Generate images, optionally with LoRA files.", epilog=SYNTAX)
    add_common(gen, "outputs/generate")
    gen.add_argument("--lora", action="append", type=T.lora_arg, metavar="FILE[:WEIGHT][:lbw=...]", help=LORA_HELP)
    gen.add_argument("--merge", action="store_true", help="Fold the LoRAs into the weights (no per-step overhead).")
    gen.add_argument("--no-contact-sheet", action="store_true", help="Do not write contact_sheet.png.")
    gen.add_argument("--prediction-type", default="auto", choices=["auto", "epsilon", "v_prediction"],
                     help="What the model predicts; auto: what the LoRA files were trained for, else the model's own.")
    gen.add_argument("--zero-terminal-snr", default="auto", choices=["auto", "on", "off"],
                     help="Sample a zero-terminal-SNR model (rescaled schedule, trailing steps); auto: as the LoRA "
                          "files were trained.")
    gen.add_argument("--timestep-spacing", default="auto", choices=["auto", "leading", "linspace", "trailing"],
                     help="Where the sampling steps fall; auto: trailing with zero terminal SNR, else the sampler's own.")
    gen.set_defaults(handler=run_generate)

    cmp = subparsers.add_parser("compare", help="Compare the base model with each LoRA: labelled grid and HTML report.",
                                epilog=SYNTAX)
    add_common(cmp, "outputs/compare")
    _add_sweep(cmp)
    cmp.set_defaults(handler=run_compare)

    ev = subparsers.add_parser("evaluate", help="Compare, plus CLIP-T, CLIP-I, DINO (and FD/KID) metrics.", epilog=SYNTAX)
    add_common(ev, "outputs/evaluate")
    _add_sweep(ev)
    ev.add_argument("--train-images", type=T.input_dir, metavar="DIR", help="Training images, for CLIP-I and DINO.")
    ev.add_argument("--reference", type=T.input_dir, metavar="DIR", help="Reference images for FD/KID (optional).")
    ev.add_argument("--clip-model", default=DEFAULT_CLIP,
                    help="CLIP hub id (read from the local cache) or folder (default: %(default)s).")
    ev.add_argument("--dino-model", default=DEFAULT_DINO,
                    help="DINO hub id (read from the local cache) or folder (default: %(default)s).")
    ev.add_argument("--fid-features", default="dino", choices=["dino", "clip"], help="Features FD/KID are computed on.")
    ev.set_defaults(handler=run_evaluate)
