"""sd-tiny's base quality and sampling speed, printed.

Quality: every colour x shape prompt ("a red star", 40 prompts) with several seeds, sampled with
PNDM at sd-tiny's guidance 2.0, read by the checker: the share of images with the prompted colour,
shape, both, and in the plain style (the base model was never shown another), with the worst
prompts listed. Speed: seconds per 64x64 image (20 PNDM steps, classifier-free guidance, VAE decode
included) at batch 1 and batched, after one warm-up batch.

    python benchmarks/tiny_quality.py [--seeds 4] [--guidance 2.0] [--steps 20] [--threads 1]
                                      [--speed-images 8] [--batch 8] [--skip-quality]

On a shared machine pass --threads 1: two OpenMP threads spin-waiting for a busy core make wall
times swing by 10x. The load average is printed with the figures.
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from sdlora.models import load_components
from sdlora.tiny.demo import SAMPLE_STEPS, SD_TINY_GUIDANCE
from sdlora.tiny.quality import as_pipeline, evaluate_quality, generate, prompt_grid


def quality(components, seeds: int, guidance: float, steps: int, batch: int) -> None:
    start = time.perf_counter()
    report = evaluate_quality(components, seeds=seeds, guidance=guidance, steps=steps, batch_size=batch)
    seconds = time.perf_counter() - start
    print(f"quality: {report['n']} images (40 prompts x {seeds} seeds), PNDM {steps} steps, guidance {guidance:g}, "
          f"{seconds:.0f} s")
    for key in ("colour", "shape", "both", "style"):
        print(f"  {key:<7} {100 * report[key]:5.1f}%")
    worst = sorted(report["per_prompt"].items(), key=lambda kv: kv[1]["colour"] + kv[1]["shape"])[:5]
    print("  weakest prompts: " + "; ".join(f"{p} (colour {100 * r['colour']:.0f}%, shape {100 * r['shape']:.0f}%)"
                                           for p, r in worst))


def seconds_per_image(pipe, batch: int, images: int, guidance: float, steps: int) -> float:
    """Wall seconds per image when generating `images` images `batch` at a time (one warm-up batch first)."""
    prompts = [p for p, _, _ in prompt_grid()][:images]
    generate(pipe, prompts[:batch], list(range(batch)), steps=steps, guidance=guidance, batch_size=batch)
    start = time.perf_counter()
    generate(pipe, prompts, list(range(len(prompts))), steps=steps, guidance=guidance, batch_size=batch)
    return (time.perf_counter() - start) / len(prompts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=SD_TINY_GUIDANCE)
    parser.add_argument("--steps", type=int, default=SAMPLE_STEPS)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--speed-images", type=int, default=8, help="images timed per batch size")
    parser.add_argument("--batch", type=int, default=8, help="the batched case's batch size")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    components = load_components("tiny")
    if not args.skip_quality:
        quality(components, args.seeds, args.guidance, args.steps, batch=40)
    pipe = as_pipeline(components)
    for batch in (1, args.batch):
        per = seconds_per_image(pipe, batch, max(args.speed_images, batch), args.guidance, args.steps)
        print(f"speed: batch {batch:>2}: {per:.3f} s per 64x64 image ({args.steps} steps, guidance {args.guidance:g})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
