"""How long the data side of a run takes: scanning, one epoch of decoding, and caching VAE latents.

Generates N photo-like 768x512 JPEGs (default 500), then prints:
- scan: build_datasets over the folder (every file read once, hashed, header and EXIF parsed);
- one epoch of pixel loading through DataLoader + BucketBatchSampler + collate (0 and W workers);
- latent caching with the full-size SD 1.4 VAE (random weights, sdlora.models.skeleton.sd14_vae) at the
  images' bucket (640x384 at resolution 512), timed on a subset and extrapolated to all N images
  (the extrapolation is labelled as such), plus a second, cache-hit run on that subset.

    python benchmarks/data_loading.py [--images 500] [--cache-subset 6] [--workers 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from sdlora.config import DataConfig, SourceConfig
from sdlora.data import BucketBatchSampler, build_datasets, cache_latents, collate
from sdlora.data.dataset import LoRADataset
from sdlora.models import load_tokenizer
from sdlora.models.skeleton import sd14_vae


def photo_like(seed: int, w: int = 768, h: int = 512) -> Image.Image:
    """Smooth gradient + shapes + mild noise: compresses like a photo (~100 KB JPEG), unlike pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([(x / w) * 255, (y / h) * 255, np.full_like(x, rng.uniform(0, 255))], -1)
    img = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 100)), int(rng.integers(0, h - 100))
        draw.ellipse([x0, y0, x0 + int(rng.integers(40, 300)), y0 + int(rng.integers(40, 300))],
                     fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img


def generate(folder: Path, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        photo_like(i).save(folder / f"{i:05d}.jpg", quality=90)
        (folder / f"{i:05d}.txt").write_text(f"1girl, tag{i % 17}, tag{i % 5}, outdoors")
    return time.perf_counter() - start


def time_epoch(dataset: LoRADataset, workers: int, batch_size: int = 4) -> float:
    sampler = BucketBatchSampler(dataset, batch_size, seed=0)
    sampler.set_epoch(0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
    start = time.perf_counter()
    seen = sum(batch["pixel_values"].shape[0] for batch in loader)
    assert seen == len(dataset)
    return time.perf_counter() - start


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def time_cache(folder: Path, subset: int, tokenizer, device: str, dtype: str, cache_dir: Path) -> dict:
    """Cache latents of the first `subset` images twice (computed, then re-used) with the SD 1.4 VAE."""
    sub = folder.parent / "subset"
    sub.mkdir(exist_ok=True)
    for path in sorted(folder.glob("*.jpg"))[:subset]:
        (sub / path.name).write_bytes(path.read_bytes())
    cfg = DataConfig(sources=[SourceConfig(path=str(sub))], resolution=512)
    vae = sd14_vae(0).to(device, DTYPES[dtype])
    warm, _ = build_datasets(cfg, tokenizer, seed=0)  # one image to warm up kernels / allocator
    warm.items = warm.items[:1]
    cache_latents(warm, vae, mode="memory", progress=False)
    out = {}
    for run in ("computed", "re-used"):
        dataset, _ = build_datasets(cfg, tokenizer, seed=0)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        stats = cache_latents(dataset, vae, mode="disk", cache_dir=cache_dir, batch_size=2, num_workers=2,
                              progress=False)
        if device == "cuda":
            torch.cuda.synchronize()
        out[run] = (time.perf_counter() - start, stats, dataset.summary()["buckets"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--cache-subset", type=int, default=6, help="images actually encoded by the SD 1.4 VAE")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="VAE dtype for caching")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    tokenizer = load_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        gen = generate(folder, args.images)
        size_mb = sum(p.stat().st_size for p in folder.glob("*.jpg")) / 1e6
        print(f"generated {args.images} 768x512 JPEGs ({size_mb:.0f} MB) in {gen:.1f} s")
        cfg = DataConfig(sources=[SourceConfig(path=str(folder))], resolution=512)
        start = time.perf_counter()
        train, _ = build_datasets(cfg, tokenizer, seed=0)
        scan = time.perf_counter() - start
        print(f"scan (read, hash, header/EXIF, captions, buckets): {scan:.2f} s = {1000 * scan / args.images:.1f} ms/image;"
              f" buckets {train.summary()['buckets']}")
        for workers in sorted({0, args.workers}):
            t = time_epoch(train, workers)
            print(f"one epoch of pixel loading, {workers} workers, batch 4: {t:.1f} s = {1000 * t / len(train):.1f} ms/image"
                  f" ({len(train) / t:.0f} images/s)")
        cache = time_cache(folder, args.cache_subset, tokenizer, args.device, args.dtype,
                           Path(tmp) / "cache")
        (t1, s1, buckets), (t2, s2, _) = cache["computed"], cache["re-used"]
        per = t1 / max(1, s1["computed"])
        print(f"latent caching, SD 1.4 VAE {args.dtype} on {args.device}, bucket {list(buckets)}: {s1['computed']} images in "
              f"{t1:.1f} s = {per:.2f} s/image -> EXTRAPOLATED to {args.images} images: {per * args.images / 60:.1f} min")
        print(f"second run, same settings: {s2['reused']} re-used, {s2['computed']} recomputed, {t2:.2f} s")


if __name__ == "__main__":
    main()
