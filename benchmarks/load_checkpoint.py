"""Load time and peak memory (RSS) of a full-size SD 1.4 single-file checkpoint load.

Builds the full-size SD 1.4 skeleton (random weights), writes it in the original LDM layout as
.safetensors and .ckpt (~4.3 GB each, in --workdir), frees it, then loads each file with
`sdlora.models.load_components` in a fresh subprocess and prints wall time and peak RSS of that
process (baseline after imports, and peak during the load). Files are fresh in the page cache
(warm-cache figures). Usage: python benchmarks/load_checkpoint.py [--workdir DIR] [--dtype fp16]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1024**3


def peak_rss_bytes() -> int:
    """VmHWM of this process (Linux): the high-water mark of resident memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def current_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure_load(path: str, dtype: str) -> dict:
    """Runs in the child process: import, then time one load_components call."""
    from sdlora.models import load_components

    import torch

    base = current_rss_bytes()
    start = time.perf_counter()
    components = load_components(path, dtype=dtype)
    seconds = time.perf_counter() - start
    load_peak = peak_rss_bytes()
    # Weights may still be memory-mapped and unread: read every one once, as the first forward would.
    start = time.perf_counter()
    params = [p for m in components.modules().values() for p in m.parameters()]
    with torch.no_grad():
        checksum = sum(float(p.float().sum()) for p in params)
    touch = time.perf_counter() - start
    n = sum(p.numel() for p in params)
    return {"seconds": seconds, "load_peak": load_peak, "touch_seconds": touch, "peak_rss": peak_rss_bytes(),
            "base_rss": base, "params": n, "finite": checksum == checksum}


def write_files(workdir: Path) -> list[Path]:
    import torch

    from sdlora.models import skeleton
    from sdlora.models.checkpoint_io import write_safetensors
    from sdlora.models.single_file import ldm_state_dict

    start = time.perf_counter()
    unet, vae, te = skeleton.sd14_unet(0), skeleton.sd14_vae(1), skeleton.sd14_text_encoder(2)
    ldm = ldm_state_dict(unet, vae, te)
    print(f"built full-size skeleton ({len(ldm)} tensors) in {time.perf_counter() - start:.1f} s", flush=True)
    files = [workdir / "sd14-skeleton.safetensors", workdir / "sd14-skeleton.ckpt"]
    write_safetensors(files[0], ldm)
    torch.save({"state_dict": ldm, "global_step": 0}, files[1])
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where to write the two ~4.3 GB files (default: a temp dir)")
    parser.add_argument("--dtype", default="fp32", help="dtype to load in (fp32, fp16, bf16)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_load(args.child, args.dtype)))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        files = write_files(Path(tmp))
        print("load: load_components(); read: first pass over every weight; RSS in GiB (base = after imports)")
        print(f"{'file':<28}{'GiB':>6}{'load s':>8}{'read s':>8}{'base':>7}{'peak@load':>11}{'peak@read':>11}")
        for path in files:
            cmd = [sys.executable, __file__, "--child", str(path), "--dtype", args.dtype]
            env = {**os.environ, "HF_HUB_OFFLINE": "1"}
            result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.splitlines()[-1])
            print(
                f"{path.name:<28}{path.stat().st_size / GIB:>6.2f}{result['seconds']:>8.1f}{result['touch_seconds']:>8.1f}"
                f"{result['base_rss'] / GIB:>7.2f}{result['load_peak'] / GIB:>11.2f}{result['peak_rss'] / GIB:>11.2f}"
                f"   ({result['params']:,} params, {args.dtype})",
                flush=True,
            )


if __name__ == "__main__":
    main()
