"""Error figures of `merge-loras` on the full-size SD 1.4 module set (random LoRAs; no model weights needed).

The scenario of tests/formats/test_merge_loras.py at full size: A on the UNet attention and the text
encoder (ranks 4/2, alphas 3/1.5), B on all UNet transformer layers (rank 3, alpha 6), merged as
0.7 A - 0.5 B. Per module the relative error ||merged - expected||_F / ||expected||_F, where
expected = sum weight * (alpha / rank) * up @ down is computed here in float64, and for the SVD merge
the Eckart-Young bound (the smallest error any rank-r fit can have, from the singular values):

  concat          exact concatenation (fp32 factors)
  concat, fp16    the same written as an fp16 kohya file and read back (the default file dtype)
  svd rank 4      cut to rank 4: error vs. the Eckart-Young bound
  svd energy 0.9  sdlora's energy rule

    PYTHONPATH=src python benchmarks/merge_errors.py [--tiny]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from accelerate import init_empty_weights

from sdlora.formats import canonical as C
from sdlora.formats.io import load_lora_file, save_lora_file
from sdlora.formats.merge_loras import merge_loras
from sdlora.formats.modules import lora_paths
from sdlora.lora import resolve_targets
from sdlora.models import skeleton
from sdlora.models.architecture import build_text_encoder, build_unet, sd14_config
from sdlora.models.names import canonical_te_path


def networks(tiny: bool):
    """Module trees only (meta tensors): a LoRA needs the shapes, not the weights."""
    if tiny:
        return skeleton.tiny_unet(0), skeleton.tiny_text_encoder(0)
    with init_empty_weights():
        return build_unet(sd14_config("unet")), build_text_encoder(sd14_config("text_encoder"))


def make_lora(unet, te, presets, text_encoder: bool, ranks, alphas, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sites = [("unet", unet, p, p) for p in resolve_targets(list(presets), lora_paths(unet))]
    if text_encoder:
        paths = resolve_targets("text-encoder", lora_paths(te))
        sites += [("text_encoder", te, p, canonical_te_path(p)) for p in paths]
    lora = {}
    for i, (component, net, path, name) in enumerate(sites):
        shape = net.get_submodule(path).weight.shape  # (out, in) or (out, in, kh, kw)
        rank, alpha = ranks[i % len(ranks)], alphas[i % len(alphas)]
        fan_in = shape[1:].numel()
        lora[C.join_key(component, name, C.DOWN)] = torch.randn((rank, *shape[1:]), generator=gen) / fan_in**0.5
        up_shape = (shape[0], rank, *[1] * (len(shape) - 2))
        lora[C.join_key(component, name, C.UP)] = torch.randn(up_shape, generator=gen) * 0.2
        lora[C.join_key(component, name, C.ALPHA)] = torch.tensor(alpha)
    return lora


def delta64(params) -> torch.Tensor:
    down, up = params[C.DOWN].double().flatten(1), params[C.UP].double().flatten(1)
    return (float(params[C.ALPHA]) / down.shape[0]) * (up @ down)


def expected(parts) -> dict:
    out = {}
    for lora, weight in parts:
        for module, params in C.group(C.normalize(lora)).items():
            out[module] = out.get(module, 0) + weight * delta64(params)
    return out


def errors(merged, want, bound: bool = False) -> tuple[float, float]:
    """(largest relative error, largest excess over the Eckart-Young bound (relative) when `bound`)."""
    worst = excess = 0.0
    for module, params in C.group(merged).items():
        got, exp = C.delta(params).double(), want[module]
        err = float((got - exp).norm() / exp.norm())
        worst = max(worst, err)
        if bound:
            sigma = torch.linalg.svdvals(exp)
            best = float(sigma[C.rank(params):].pow(2).sum().sqrt() / sigma.pow(2).sum().sqrt())
            excess = max(excess, err - best)
    return worst, excess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="The tiny test model's module set.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    unet, te = networks(args.tiny)
    a = make_lora(unet, te, ("unet-attn",), True, (4, 2), (3.0, 1.5), seed=1)
    b = make_lora(unet, te, ("unet-transformer",), False, (3,), (6.0,), seed=2)
    parts = [(a, 0.7), (b, -0.5)]
    want = expected(parts)
    print(f"{'tiny' if args.tiny else 'SD 1.4'}: {len(want)} modules merged")
    start = time.perf_counter()
    merged, _ = merge_loras(parts)
    print(f"concat: largest relative error {errors(merged, want)[0]:.1e} ({time.perf_counter() - start:.1f} s)")
    with tempfile.TemporaryDirectory() as tmp:
        path = save_lora_file(Path(tmp) / "m.safetensors", merged, {}, "kohya", torch.float16)
        print(f"concat, fp16 file: largest relative error {errors(load_lora_file(path)[0], want)[0]:.1e}")
    for label, options in (("svd rank 4", dict(rank=4)), ("svd energy 0.9", dict(rule="energy", threshold=0.9))):
        start = time.perf_counter()
        merged, report = merge_loras(parts, **options)
        worst, excess = errors(merged, want, bound=True)
        print(f"{label}: largest relative error {worst:.1e}, at most {excess:.1e} above the Eckart-Young bound; "
              f"energy kept {report.energy:.4f} (lowest module {report.min_energy:.4f}) "
              f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
