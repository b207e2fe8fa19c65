"""Peak memory and time of `extract` on the full-size SD 1.4 architecture (random weights).

BASE is the random UNet + text encoder of sdlora.models.skeleton; TUNED is a copy whose UNet
attention projections got a known rank-4 change. The VAE is not needed. Peak RSS (ru_maxrss) is
read after building the two models and after the extraction, so the extraction's own share shows.

    PYTHONPATH=src python benchmarks/extract_memory.py            # full size: ~8 GB RAM, minutes
    PYTHONPATH=src python benchmarks/extract_memory.py --tiny     # the tiny test model (a smoke run)
"""
from __future__ import annotations

import argparse
import copy
import resource
import time
from types import SimpleNamespace

import torch

from sdlora.formats.extract import extract_lora
from sdlora.formats.modules import lora_paths
from sdlora.lora import resolve_targets
from sdlora.models import skeleton


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def models(tiny: bool):
    unet = (skeleton.tiny_unet if tiny else skeleton.sd14_unet)(0)
    te = (skeleton.tiny_text_encoder if tiny else skeleton.sd14_text_encoder)(0)
    base = SimpleNamespace(unet=unet.requires_grad_(False), text_encoder=te.requires_grad_(False))
    tuned = SimpleNamespace(unet=copy.deepcopy(base.unet), text_encoder=base.text_encoder)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for path in resolve_targets("unet-attn", lora_paths(tuned.unet)):
            weight = tuned.unet.get_submodule(path).weight  # (out, in)
            change = torch.randn(weight.shape[0], 4, generator=gen) @ torch.randn(4, weight.shape[1], generator=gen)
            weight.add_(0.01 * change)
    return base, tuned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="The tiny model instead of full size.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base, tuned = models(args.tiny)
    before = peak_gib()
    start = time.perf_counter()
    lora, report = extract_lora(base, tuned, rank=4)
    seconds = time.perf_counter() - start
    print(f"{'tiny' if args.tiny else 'SD 1.4'}: {len(report.modules)} modules extracted, "
          f"{len(report.unchanged)} unchanged; largest relative error {report.max_error:.2e}")
    print(f"peak RSS {before:.2f} GiB with both models built, {peak_gib():.2f} GiB after extracting; "
          f"extraction {seconds:.1f} s on {args.threads} threads")


if __name__ == "__main__":
    main()
