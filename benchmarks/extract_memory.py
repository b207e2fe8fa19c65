"""Peak memory and time of `extract` on the full-size SD 1.4 architecture (random weights), read from files.

BASE is the random UNet + VAE + text encoder of sdlora.models.skeleton, written as one fp32 LDM-layout
.safetensors file (as sd-v1-4 is distributed); TUNED is the same with a known rank-4 change on the 128
UNet attention projections. Each measurement runs in its own process, so its peak RSS (VmHWM,
file-backed pages included) is its own:

  lazy   extract_lora_file, as `sdlora extract` runs: both files read one module at a time
  whole  both models loaded whole (load_components, fp32), then extract_lora (how extract ran before)

    PYTHONPATH=src python benchmarks/extract_memory.py --dir /tmp/extract-bench   # full size: 8.6 GB disk, minutes
    PYTHONPATH=src python benchmarks/extract_memory.py --tiny --dir /tmp/x         # the tiny test model (a smoke run)
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from sdlora.models import skeleton
from sdlora.models.checkpoint_io import write_safetensors
from sdlora.models.single_file import architecture_metadata, ldm_state_dict


def peak_gib() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across exec, so a
    child would report the peak of the parent that wrote the models."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # not Linux: KiB on most systems


def write_models(folder: Path, tiny: bool) -> None:
    """base.safetensors and tuned.safetensors (one set of networks, changed in place in between)."""
    from sdlora.formats.modules import lora_paths
    from sdlora.lora import resolve_targets

    kind = "tiny" if tiny else "sd14"
    unet, vae, te = (getattr(skeleton, f"{kind}_{part}")(0) for part in ("unet", "vae", "text_encoder"))
    configs = {"unet": dict(unet.config), "vae": dict(vae.config), "text_encoder": te.config.to_dict()}
    metadata = {"format": "pt", **architecture_metadata(configs)}
    write_safetensors(folder / "base.safetensors", ldm_state_dict(unet, vae, te, configs), metadata)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for path in resolve_targets("unet-attn", lora_paths(unet)):
            weight = unet.get_submodule(path).weight  # (out, in)
            change = torch.randn(weight.shape[0], 4, generator=gen) @ torch.randn(4, weight.shape[1], generator=gen)
            weight.add_(0.01 * change)
    write_safetensors(folder / "tuned.safetensors", ldm_state_dict(unet, vae, te, configs), metadata)


def measure(folder: Path, mode: str) -> dict:
    """Run one extraction in this process; its figures as a dict."""
    from sdlora.formats.extract import extract_lora, extract_lora_file
    from sdlora.models.loader import load_components

    base, tuned, out = folder / "base.safetensors", folder / "tuned.safetensors", folder / f"lora-{mode}.safetensors"
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    if mode == "lazy":
        report = extract_lora_file(base, tuned, out, rank=4)
        loaded = None
    else:
        models = [load_components(path, dtype=torch.float32) for path in (base, tuned)]
        loaded = peak_gib()
        _, report = extract_lora(*models, rank=4)
    return {"mode": mode, "peak_gib": peak_gib(), "loaded_gib": loaded, "seconds": time.perf_counter() - start,
            "modules": len(report.modules), "unchanged": len(report.unchanged), "max_error": report.max_error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="Where the two model files are (written if absent).")
    parser.add_argument("--tiny", action="store_true", help="The tiny model instead of full size.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="lazy,whole", help="Comma-separated: lazy, whole.")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child process's mode
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(measure(args.dir, args.measure)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    if not (args.dir / "tuned.safetensors").exists():
        start = time.perf_counter()
        write_models(args.dir, args.tiny)
        print(f"wrote the two models in {time.perf_counter() - start:.0f} s")
    for mode in args.modes.split(","):
        child = [sys.executable, __file__, "--dir", str(args.dir), "--threads", str(args.threads), "--measure", mode]
        result = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        loaded = f", {result['loaded_gib']:.2f} GiB with both loaded" if result["loaded_gib"] else ""
        print(f"{'tiny' if args.tiny else 'SD 1.4'} {mode}: peak RSS {result['peak_gib']:.2f} GiB{loaded}; "
              f"{result['modules']} modules extracted, {result['unchanged']} unchanged, largest relative error "
              f"{result['max_error']:.1e}; {result['seconds']:.0f} s on {args.threads} threads")


if __name__ == "__main__":
    main()
