"""Caching VAE latents, in memory or on disk, and the one function that encodes pixels to latents.

What is stored per image: the VAE posterior's `mean` and `std` (4, H/8, W/8), float16, for the
unflipped image and, when flip augmentation is on, the flipped one (the VAE is not exactly
flip-equivariant, so the flip is encoded, not mirrored); with data.masks on, the unflipped
`loss_mask` (1, H/8, W/8) float32 (its block means are exact, so the flipped one is its mirror).
Each time an item is drawn the dataset samples `(mean + std * noise) * scaling_factor`, exactly what
`encode_latents` does uncached.

Disk layout: one safetensors file per image and bucket, `<sha1(path)[:16]>_<W>x<H>.safetensors`, whose
metadata holds the full key (image content hash, bucket, crop, flip variants, background, mask source
and mask file hash when masks are on, VAE fingerprint, encode dtype, format version). A file whose key
differs is recomputed and overwritten.

Random crop with cached latents: the center crop is cached (one warning). Latents cannot follow a
per-step random crop; refusing would force users to give up caching for a small augmentation.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from sdlora.data.buckets import Size
from sdlora.data.images import BadImage
from sdlora.data.masks import mask_identity, mask_source
from sdlora.data.pixels import load_sample
from sdlora.errors import SdloraError
from sdlora.fileio import atomic_save_safetensors, is_regular

log = logging.getLogger("sdlora.data")

CACHE_VERSION = "1"  # bump when the pixel pipeline (resize filter, crop rounding) changes
STORE_DTYPE = torch.float16


def encode_latents(vae, pixel_values: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> latents (B, 4, H/8, W/8) as the UNet sees them (sampled, scaled)."""
    param = next(vae.parameters())
    dist = vae.encode(pixel_values.to(param.device, param.dtype)).latent_dist
    return dist.sample(generator) * vae.config.scaling_factor


def vae_factor(vae) -> int:
    """Pixels per latent cell along each side: 2 ** (VAE blocks - 1) (8 for SD, 4 for sd-tiny)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def vae_fingerprint(vae) -> str:
    """sha1 over the VAE's config and every parameter's bytes: any change of weights changes it."""
    h = hashlib.sha1(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def latent_key(record, bucket: Size, *, flips: tuple[bool, ...], background, vae_id: str, dtype,
               masks: str = "off") -> str:
    key = {"image": record.digest, "bucket": list(bucket), "crop": "center", "flips": list(flips),
           "background": list(background), "vae": vae_id, "dtype": str(dtype), "version": CACHE_VERSION}
    mask = mask_identity(record, masks)
    if mask is not None:  # masks off: the key (and so every existing cache file) is as before masks existed
        key["mask"] = mask
    return json.dumps(key, sort_keys=True)


def _with_flip(tensors: dict[str, torch.Tensor], flip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(mean, std, loss_mask or None) of one flip variant from an image's stored tensors."""
    suffix = "_flip" if flip else ""
    mask = tensors.get("loss_mask")
    if mask is not None and flip:
        mask = torch.flip(mask, dims=[-1])
    return tensors["mean" + suffix], tensors["std" + suffix], mask


def cache_file(cache_dir: Path, record, bucket: Size) -> Path:
    stem = hashlib.sha1(os.fsencode(os.path.abspath(record.path))).hexdigest()[:16]  # any file name
    return cache_dir / f"{stem}_{bucket[0]}x{bucket[1]}.safetensors"


def stored_key(path: Path) -> str | None:
    """The key in a cache file's metadata, or None when it is missing, unreadable or not a regular file."""
    if not is_regular(path):  # never open a FIFO or device left where a cache file should be
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("key")
    except Exception:
        return None


class MemoryLatents:
    """Latents kept in RAM: {record: stored tensors}."""

    def __init__(self) -> None:
        self.data: dict[int, dict[str, torch.Tensor]] = {}

    def reuse(self, record: int, rec, bucket: Size, key: str) -> bool:
        return False

    def add(self, record: int, rec, bucket: Size, key: str, tensors: dict[str, torch.Tensor]) -> None:
        self.data[record] = tensors

    def get(self, record: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        return _with_flip(self.data[record], flip)


class DiskLatents:
    """One file per image and bucket; read at each access (keeps RAM flat; safetensors loads are fast)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[int, str] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def reuse(self, record: int, rec, bucket: Size, key: str) -> bool:
        """Adopt an existing file when its stored key matches."""
        path = cache_file(self.folder, rec, bucket)
        if stored_key(path) != key:
            return False
        self.files[record] = str(path)
        return True

    def add(self, record: int, rec, bucket: Size, key: str, tensors: dict[str, torch.Tensor]) -> None:
        path = cache_file(self.folder, rec, bucket)
        atomic_save_safetensors(path, tensors, {"key": key})
        self.files[record] = str(path)

    def get(self, record: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        try:
            return _with_flip(load_file(self.files[record]), flip)
        except (OSError, KeyError, SafetensorError) as exc:  # a cache file removed or damaged during the run
            raise BadImage("unreadable", f"latent cache file {self.files[record]}: {exc}") from None


class _Pixels(Dataset):
    """Center-cropped pixels (and masks) of the records to encode (decoded in DataLoader workers)."""

    def __init__(self, dataset, todo: list[int]):
        self.records, self.buckets, self.options, self.todo = dataset.records, dataset.record_buckets, dataset.options, todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int):
        record = self.todo[k]
        rec, opt = self.records[record], self.options
        try:
            sample = load_sample(rec.path, rec.size, self.buckets[record], crop="center", flip=False,
                                 background=opt.background, max_pixels=opt.max_pixels,
                                 mask=mask_source(rec, opt.masks), latent_factor=opt.latent_factor)
            return record, sample, None
        except BadImage as exc:  # the caller drops the image and reports it
            return record, None, exc


def _bucket_batches(dataset, todo: list[int], batch_size: int) -> list[list[int]]:
    """Positions in `todo` grouped by bucket, in batches (same shapes per batch)."""
    groups: dict[Size, list[int]] = {}
    for k, record in enumerate(todo):
        groups.setdefault(dataset.record_buckets[record], []).append(k)
    return [g[i:i + batch_size] for _, g in sorted(groups.items()) for i in range(0, len(g), batch_size)]


@torch.no_grad()
def _encode(vae, pixels: torch.Tensor, flips: tuple[bool, ...]) -> list[dict[str, torch.Tensor]]:
    """(B, 3, H, W) -> per image {"mean", "std"[, "mean_flip", "std_flip"]} (4, H/8, W/8), float16 on CPU."""
    param = next(vae.parameters())
    out: list[dict[str, torch.Tensor]] = [{} for _ in range(pixels.shape[0])]
    for flip in flips:
        x = torch.flip(pixels, dims=[-1]) if flip else pixels
        dist = vae.encode(x.to(param.device, param.dtype)).latent_dist
        suffix = "_flip" if flip else ""
        for b in range(x.shape[0]):
            out[b]["mean" + suffix] = dist.mean[b].to("cpu", STORE_DTYPE).contiguous()
            out[b]["std" + suffix] = dist.std[b].to("cpu", STORE_DTYPE).contiguous()
    return out


def cache_latents(dataset, vae, *, mode: str = "memory", cache_dir: str | Path | None = None, device=None,
                  dtype=None, num_workers: int = 0, batch_size: int = 4, progress: bool = True) -> dict:
    """Encode every image of `dataset` once (both flips when flip is on) and switch it to latents.
    The VAE is moved to `device`/`dtype` when given. An image that fails to decode now is dropped from
    the dataset and reported (dataset.drop). Returns counts {"computed", "reused", "failed"}."""
    if mode == "off":
        return {"computed": 0, "reused": 0, "failed": 0}
    if mode not in ("memory", "disk"):
        raise SdloraError(f"data.cache_latents: {mode!r} is not one of 'off', 'memory', 'disk'")
    if mode == "disk" and cache_dir is None:
        raise SdloraError("data.cache_latents = \"disk\" needs data.cache_dir (a folder for the cache files)")
    if dataset.options.crop == "random":
        log.warning("data.crop = \"random\" cannot be cached: latents of the center crop are cached instead")
    if device is not None or dtype is not None:
        vae.to(device=device, dtype=dtype)
    vae.eval()
    dataset.options = dataclasses.replace(dataset.options, latent_factor=vae_factor(vae))  # masks match the latents
    flips = (False, True) if dataset.options.flip else (False,)
    vae_id, enc_dtype = vae_fingerprint(vae), next(vae.parameters()).dtype
    store = DiskLatents(Path(cache_dir)) if mode == "disk" else MemoryLatents()
    keys, todo = {}, []
    for record in dataset.used_records():
        rec, bucket = dataset.records[record], dataset.record_buckets[record]
        keys[record] = latent_key(rec, bucket, flips=flips, background=dataset.options.background,
                                  vae_id=vae_id, dtype=enc_dtype, masks=dataset.options.masks)
        if not store.reuse(record, rec, bucket, keys[record]):
            todo.append(record)
    loader = DataLoader(_Pixels(dataset, todo), batch_sampler=_bucket_batches(dataset, todo, batch_size),
                        num_workers=num_workers if todo else 0, collate_fn=list)
    failed = _compute(dataset, vae, loader, keys, store, flips, progress)
    dataset.drop(failed)
    dataset.latents, dataset.latent_scale = store, float(vae.config.scaling_factor)
    stats = {"computed": len(todo) - len(failed), "reused": len(keys) - len(todo), "failed": len(failed)}
    log.info("latents: %(computed)d computed, %(reused)d re-used from the cache, %(failed)d failed", stats)
    return stats


def _compute(dataset, vae, loader: DataLoader, keys: dict[int, str], store, flips: tuple[bool, ...],
             progress: bool) -> dict[int, BadImage]:
    """Encode what `loader` decodes into `store`; returns {record: error} of those that failed."""
    failed: dict[int, BadImage] = {}
    with tqdm(total=len(loader.dataset), desc=f"caching latents ({dataset.name})", unit="img",
              disable=not progress or len(loader.dataset) == 0) as bar:
        for batch in loader:
            failed.update((record, error) for record, _, error in batch if error is not None)
            good = [s for s in batch if s[1] is not None]
            if good:
                encoded = _encode(vae, torch.stack([s[1]["pixel_values"] for s in good]), flips)
                for (record, sample, _), tensors in zip(good, encoded):
                    if "loss_mask" in sample:
                        tensors["loss_mask"] = sample["loss_mask"].contiguous()
                    store.add(record, dataset.records[record], dataset.record_buckets[record], keys[record], tensors)
            bar.update(len(batch))
    return failed
