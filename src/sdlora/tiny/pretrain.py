"""Reproducible pretraining of sd-tiny from scratch on the shapes world.

    python -m sdlora.tiny.pretrain --out DIR [--device cuda] [--seed 0] ...

Stage 1 trains the VAE (plain and styled images), measures the latent scaling factor and stores
it in the VAE config; stage 2 trains the UNet and text encoder on plain images only. Each stage
stops after its step count or its time budget, whichever comes first, and the model is saved
either way: fp16 safetensors in diffusers layout (model_index.json, unet/, vae/, text_encoder/,
scheduler/; no tokenizer/: loaders use the bundled one), at most 20 MB in all.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, PNDMScheduler,
                       StableDiffusionPipeline)

from sdlora.errors import SdloraError
from sdlora.models import load_tokenizer
from sdlora.tiny.arch import ARCHS, build_models, param_count
from sdlora.tiny.pool import caption_table, render_pool
from sdlora.tiny.quality import as_pipeline, evaluate_quality, generate, image_grid, prompt_grid
from sdlora.tiny.save import save_sd_tiny
from sdlora.tiny.train_unet import LatentData, train_unet
from sdlora.tiny.train_vae import encode_pool, latent_scaling_factor, train_vae
from sdlora.tiny.trainkit import StageOptions
from sdlora.tiny.world import SHAPE_NAMES

# Defaults by device type; every one can be overridden by a flag. GPU: under 5 minutes on one
# H100/H200, startup and evaluation included (the time budgets bound it; on an H200 a VAE step took
# 27 ms at batch 128, a UNet + text encoder step 61 ms at batch 512); CPU: under an hour on 2 cores.
DEFAULTS: dict[str, dict] = {
    "cuda": {"pool": 60000, "styled_pool": 15000, "vae_steps": 6000, "vae_batch": 128, "vae_lr": 1e-3,
             "vae_time": 60.0, "unet_steps": 30000, "batch_size": 512, "lr": 6e-4, "unet_time": 200.0,
             "eval_seeds": 4, "eval_guidance": [2.0, 3.5, 5.0]},
    "cpu": {"pool": 8000, "styled_pool": 2000, "vae_steps": 600, "vae_batch": 16, "vae_lr": 1e-3,
            "vae_time": 900.0, "unet_steps": 3000, "batch_size": 32, "lr": 6e-4, "unet_time": 2700.0,
            "eval_seeds": 1, "eval_guidance": [3.5]},
}
UNET_WARMUP = 300
SAMPLERS = {"pndm": PNDMScheduler, "dpm++": DPMSolverMultistepScheduler}  # scored after saving


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdlora.tiny.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (diffusers layout)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arch", default="sd-tiny", choices=sorted(ARCHS), help="micro: tests and dry runs")
    p.add_argument("--pool", type=int, help="plain images rendered for training")
    p.add_argument("--styled-pool", type=int, help="extra striped images, seen by the VAE only")
    p.add_argument("--vae-steps", type=int)
    p.add_argument("--vae-batch", type=int)
    p.add_argument("--vae-lr", type=float)
    p.add_argument("--vae-time", type=float, help="stage 1 time budget in seconds")
    p.add_argument("--unet-steps", type=int)
    p.add_argument("--batch-size", type=int, help="stage 2 batch size")
    p.add_argument("--lr", type=float, help="stage 2 learning rate")
    p.add_argument("--unet-time", type=float, help="stage 2 time budget in seconds")
    p.add_argument("--time-budget", type=float,
                   help="total seconds for both stages, split 25/75 (overrides --vae-time/--unet-time)")
    p.add_argument("--vae-from", type=Path,
                   help="skip stage 1: reuse the VAE of this sd-tiny folder (e.g. an earlier --out)")
    p.add_argument("--workers", type=int, help="rendering processes (default: all cores)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-seeds", type=int,
                   help="after saving, score every colour x shape prompt with this many seeds (0: skip)")
    p.add_argument("--eval-guidance", type=float, nargs="+", help="guidance scales to score")
    p.add_argument("--eval-steps", type=int, default=20, help="sampling steps (PNDM, as SD 1.4)")
    p.add_argument("--samples", type=Path, help="also write a PNG grid of one image per prompt here")
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill unset flags with the defaults of the device type."""
    defaults = DEFAULTS["cuda" if args.device.startswith("cuda") else "cpu"]
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.time_budget is not None:
        args.vae_time, args.unet_time = 0.25 * args.time_budget, 0.75 * args.time_budget
    if min(args.pool, args.vae_steps, args.unet_steps, args.batch_size, args.vae_batch) < 1:
        raise SdloraError("pretrain: --pool, --*-steps and batch sizes must be at least 1")
    return args


def load_vae(folder: Path, device: torch.device) -> AutoencoderKL:
    """The fp32 VAE of an sd-tiny folder, for skipping stage 1."""
    if not (folder / "vae" / "config.json").is_file():
        raise SdloraError(f"--vae-from {folder}: no vae/config.json there; pass an sd-tiny output folder")
    return AutoencoderKL.from_pretrained(folder / "vae").float().to(device)


def pretrain(args: argparse.Namespace) -> dict:
    """Run both stages and save; returns the summary also written to DIR/pretrain.json."""
    start = time.perf_counter()
    device = torch.device(args.device)
    # Render before any CUDA work: the pool's worker processes are forked.
    plain = render_pool(args.seed, args.pool, "plain", workers=args.workers)
    styled = render_pool(args.seed, args.styled_pool, "striped", start=args.pool, workers=args.workers)
    print(f"[data] {len(plain.scenes)} plain + {len(styled.scenes)} striped images rendered in "
          f"{time.perf_counter() - start:.1f}s", flush=True)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for what autocast leaves in fp32
        torch.backends.cudnn.benchmark = True
    unet, vae, text_encoder = (m.to(device) for m in build_models(args.arch, args.seed))
    images = torch.from_numpy(np.concatenate([plain.images, styled.images])).to(device)
    vae, vae_log = stage_one(args, vae, images)
    data = latent_data(vae, images[:len(plain.scenes)], plain.scenes)
    del images
    options = StageOptions(args.unet_steps, args.batch_size, args.lr, args.unet_time,
                           warmup=min(UNET_WARMUP, args.unet_steps // 10 + 1), log_every=args.log_every)
    unet_log = train_unet(unet, text_encoder, data, options, seed=args.seed)
    sizes = save_sd_tiny(args.out, unet=unet, vae=vae, text_encoder=text_encoder)
    summary = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "params": {"unet": param_count(unet), "vae": param_count(vae), "text_encoder": param_count(text_encoder)},
        "bytes": sizes, "scaling_factor": data.scaling_factor, "vae_last": vae_log[-1], "unet_last": unet_log[-1],
        "wall_seconds": round(time.perf_counter() - start, 1), "torch": torch.__version__,
    }
    if args.eval_seeds > 0:
        summary["quality"] = evaluate_saved(args, device)
    (args.out / "pretrain.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"[done] saved {args.out} ({sum(sizes.values()) / 1e6:.2f} MB) in {summary['wall_seconds']}s", flush=True)
    return summary


def stage_one(args: argparse.Namespace, vae: AutoencoderKL, images: torch.Tensor) -> tuple[AutoencoderKL, list[str]]:
    """Train the VAE on all images (or reuse the one of --vae-from); returns it frozen, and its log."""
    if args.vae_from is not None:
        vae, log = load_vae(args.vae_from, images.device), [f"reused {args.vae_from}"]
    else:
        options = StageOptions(args.vae_steps, args.vae_batch, args.vae_lr, args.vae_time, log_every=args.log_every)
        log = train_vae(vae, images, options, seed=args.seed)
    return vae.requires_grad_(False), log


def latent_data(vae: AutoencoderKL, images: torch.Tensor, scenes: list) -> LatentData:
    """Encode the plain images, store the latent scaling factor in the VAE config, tokenize captions."""
    mean, std = encode_pool(vae, images)
    scaling = latent_scaling_factor(mean, std)
    vae.register_to_config(scaling_factor=scaling)
    ids, index = caption_table(scenes, load_tokenizer())
    print(f"[data] latents encoded, scaling factor {scaling:.5f}, {len(ids)} distinct captions", flush=True)
    return LatentData(mean, std, ids.to(images.device), index.to(images.device), scaling)


def evaluate_saved(args: argparse.Namespace, device: torch.device) -> dict:
    """Quality rates of the saved model, loaded back through diffusers, for each sampler (SD 1.4's
    PNDM and DPM-Solver++) and guidance scale, keyed "sampler@guidance"."""
    pipe = StableDiffusionPipeline.from_pretrained(args.out, tokenizer=load_tokenizer()).to(device)
    rates = {}
    for sampler, scheduler_class in SAMPLERS.items():
        scheduler = scheduler_class.from_config(pipe.scheduler.config)
        for guidance in args.eval_guidance:
            report = evaluate_quality(pipe, seeds=args.eval_seeds, guidance=guidance, steps=args.eval_steps,
                                      batch_size=160, scheduler=scheduler)
            key = f"{sampler}@{guidance}"
            rates[key] = {k: report[k] for k in ("colour", "shape", "both", "style", "n")}
            print(f"[quality] {key}: " + " ".join(f"{k}={v:.3f}" for k, v in rates[key].items() if k != "n")
                  + f" over {report['n']} images", flush=True)
    if args.samples is not None:
        prompts = [p for p, _, _ in prompt_grid()]
        images = generate(as_pipeline(pipe), prompts, [0] * len(prompts), steps=args.eval_steps)
        image_grid(images, columns=len(SHAPE_NAMES)).save(args.samples)
    return rates


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pretrain(resolve(args))
    except SdloraError as exc:
        print(f"sdlora: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
