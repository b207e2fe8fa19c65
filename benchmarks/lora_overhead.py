"""Per-step generation cost of a LoRA kept as separate adapters (unmerged) vs folded into the weights
(`sdlora generate --merge`), against the plain UNet.

One sampling step of SD with classifier-free guidance is one UNet forward at batch 2 (the prompt and
the negative prompt). This times that forward, in three states of the same UNet:
  base      no LoRA wrappers at all;
  unmerged  LoRA wrappers on the preset's modules (random weights), adapters computed every step;
  merged    the same wrappers after merge(): forward returns the base layer's output directly.
Rounds interleave the three states, so a busy machine slows them alike; medians are printed.

    python benchmarks/lora_overhead.py [--models tiny,sd14] [--resolution 256] [--preset unet-transformer]
                                       [--rank 16] [--rounds 3] [--steps 3] [--device cpu] [--dtype fp32]
                                       [--threads N]

`sd14` is the full-size SD 1.4 UNet architecture with random weights (sdlora.models.skeleton): real
shapes, so real timings; it needs about 3.5 GB of memory in fp32.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from sdlora.lora import inject, lora_modules, merge_lora, remove, unmerge_lora
from sdlora.models.skeleton import sd14_unet, tiny_unet

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
BUILDERS = {"tiny": tiny_unet, "sd14": sd14_unet}


def randomize_adapters(unet: torch.nn.Module, seed: int = 0, std: float = 0.01) -> None:
    """Non-zero `up` weights, so that merged and unmerged really compute a LoRA."""
    gen = torch.Generator().manual_seed(seed)
    for wrapper in lora_modules(unet).values():
        for adapter in wrapper.adapters.values():
            up = adapter.up.weight
            up.data = (torch.randn(up.shape, generator=gen) * std).to(up.dtype).to(up.device)


def step_inputs(unet, resolution: int, device, dtype):
    """(latents (2, 4, r/8, r/8), timestep, text states (2, 77, cross_attention_dim))."""
    side = resolution // 8
    latents = torch.randn(2, unet.config.in_channels, side, side, device=device, dtype=dtype)
    text = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
    return latents, torch.tensor(500, device=device), text


@torch.no_grad()
def time_steps(unet, inputs, steps: int) -> float:
    """Median seconds of one UNet forward over `steps` calls."""
    times = []
    for _ in range(steps):
        if inputs[0].is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        unet(inputs[0], inputs[1], encoder_hidden_states=inputs[2])
        if inputs[0].is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, args) -> dict:
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    build_start = time.perf_counter()
    unet = BUILDERS[name](0).to(device).eval()
    if dtype != torch.float32:
        unet = unet.to(dtype)
    build = time.perf_counter() - build_start
    inputs = step_inputs(unet, args.resolution, device, dtype)
    time_steps(unet, inputs, 1)  # warm-up (allocator, kernels)
    results: dict[str, list[float]] = {"base": [], "unmerged": [], "merged": []}
    modules = params = 0
    for _ in range(args.rounds):
        results["base"].append(time_steps(unet, inputs, args.steps))
        wrappers = inject(unet, args.preset, rank=args.rank, dtype=dtype)
        randomize_adapters(unet)
        modules = len(wrappers)
        params = sum(p.numel() for w in wrappers.values() for p in w.adapters.parameters())
        results["unmerged"].append(time_steps(unet, inputs, args.steps))
        merge_lora(unet)
        results["merged"].append(time_steps(unet, inputs, args.steps))
        unmerge_lora(unet)
        remove(unet)
    medians = {k: statistics.median(v) for k, v in results.items()}
    return {"model": name, "build_s": build, "modules": modules, "params": params, **medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,sd14", help="comma-separated: tiny, sd14")
    parser.add_argument("--resolution", type=int, default=256, help="image side in pixels (latents are 1/8)")
    parser.add_argument("--preset", default="unet-transformer", help="LoRA targets (sdlora.lora.presets)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of base/unmerged/merged")
    parser.add_argument("--steps", type=int, default=3, help="UNet forwards timed per state per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {args.device} ({torch.get_num_threads()} threads), {args.dtype}, {args.resolution}px, "
          f"batch 2 (CFG), LoRA {args.preset} rank {args.rank}; median of {args.rounds} rounds x {args.steps} steps")
    print(f"{'model':6} {'modules':>7} {'LoRA params':>11} {'base ms':>9} {'unmerged ms':>11} {'merged ms':>9} "
          f"{'unmerged +%':>11} {'merged +%':>9}")
    for name in args.models.split(","):
        r = measure(name.strip(), args)
        over = lambda key: 100 * (r[key] / r["base"] - 1)  # noqa: E731
        print(f"{r['model']:6} {r['modules']:>7} {r['params']:>11,} {1e3 * r['base']:>9.1f} {1e3 * r['unmerged']:>11.1f} "
              f"{1e3 * r['merged']:>9.1f} {over('unmerged'):>+11.1f} {over('merged'):>+9.1f}")


if __name__ == "__main__":
    main()
