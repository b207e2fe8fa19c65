"""`LoRADataset`: the samples the trainer sees (see docs/architecture.md, `sdlora.data`).

An item is one (image, repeat) slot: `items[i]` is an index into `records`, so repeats and DreamBooth
class images are just repeated indices, and every item's bucket is fixed for the whole run (batch
shapes never depend on worker state). A DreamBooth class slot takes the next class images of its
bucket each epoch (`class_pool`, in the run's seeded order), so with more class images than instance
items every one of them is used, not only the first epoch's share (class images of a bucket no class
slot drew are not used). Randomness (crop, flip, caption shuffle/dropout, latent sampling) comes from a
generator seeded with (seed, epoch, item): the same run, the same samples.

Every image was decoded once at scan time. One that fails now (deleted or rewritten during the run, a
cache file removed) is logged once and replaced by another image of the same bucket, so an epoch
never dies halfway; only such load errors (`BadImage`) are caught, a bug in the code is not.
An image that fails while latents are cached is dropped before training starts (`drop`).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from sdlora.data.buckets import Size, bucket_name
from sdlora.data.captions import CaptionTransform, tag_frequency
from sdlora.data.files import shown
from sdlora.data.images import BadImage
from sdlora.data.masks import mask_source
from sdlora.data.pixels import load_sample
from sdlora.data.sources import ImageRecord, Skipped
from sdlora.errors import SdloraError

log = logging.getLogger("sdlora.data")


@dataclass(frozen=True)
class SampleOptions:
    """Per-sample image settings (from DataConfig) and the run's seed."""

    crop: str = "center"
    flip: bool = False
    background: tuple[int, int, int] = (255, 255, 255)
    max_pixels: int = 100_000_000
    seed: int = 0
    masks: str = "off"  # data.masks: "off", "alpha" or "folder" (see sdlora.data.masks)
    latent_factor: int = 8  # the VAE's downsampling factor: loss masks are made at latent resolution


class LoRADataset(Dataset):
    """Items are dicts: `pixel_values` (3, H, W) in [-1, 1] or `latents` (4, H/8, W/8) once cached;
    `loss_mask` (1, H/f, W/f) in [0, 1] when data.masks is on (f = options.latent_factor, as the latents); `input_ids` (77,) int64 or
    `encoder_hidden_states` (77, D) once cached; `is_class`, `caption`, `bucket` (W, H)."""

    def __init__(self, records: list[ImageRecord], buckets: list[Size], items: list[int],
                 transforms: dict[int, CaptionTransform], options: SampleOptions, tokenizer=None, *,
                 name: str = "train", source_paths: list[str] | None = None, skipped: list[Skipped] | None = None,
                 class_pool: list[int] | None = None):
        if len(buckets) != len(records):
            raise ValueError("one bucket per record expected")
        self.records, self.record_buckets, self.items = records, buckets, items
        self.class_pool = list(class_pool or [])  # every class record the slots cycle through, in order
        self._turns: dict[int, tuple[list[int], int, int]] | None = None  # class slot -> (pool, k, slots)
        self.transforms, self.options, self.tokenizer = transforms, options, tokenizer
        self.name, self.source_paths, self.skipped = name, source_paths or [], skipped or []
        self.epoch = 0
        self.latents = None  # a cache.LatentStore once latents are cached
        self.latent_scale = 1.0  # VAE scaling factor applied to cached latents
        self.text_cache: dict[str, torch.Tensor] | None = None  # caption -> (77, D)
        self._bad: dict[int, str] = {}  # record -> reason it failed after the scan (per process)
        self._ids: dict[str, torch.Tensor] = {}

    # ------------------------------------------------------------------ structure
    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def bucket_of(self, i: int) -> Size:
        return self.record_buckets[self.items[i]]

    def bucket_indices(self) -> dict[Size, list[int]]:
        """Item indices per bucket (every bucket kept, however small)."""
        out: dict[Size, list[int]] = {}
        for i, rec in enumerate(self.items):
            out.setdefault(self.record_buckets[rec], []).append(i)
        return out

    @property
    def captions_cacheable(self) -> bool:
        """No tag shuffle or tag dropout anywhere: every caption drawn is its record's full caption or,
        with caption dropout, "" (text outputs can be cached)."""
        return all(t.cacheable for t in self.transforms.values())

    def cacheable_captions(self) -> list[str]:
        """Every text a sample of this dataset can carry, when captions_cacheable."""
        texts = {self.full_caption(r) for r in self.used_records()}
        if any(t.caption_dropout > 0 for t in self.transforms.values()):
            texts.add("")
        return sorted(texts)

    def full_caption(self, record: int) -> str:
        """Record's caption with its source's prefix/suffix and no randomness."""
        rec = self.records[record]
        return self.transforms[rec.source].full(rec.caption)

    def used_records(self) -> list[int]:
        return sorted(set(self.items) | set(self.class_pool))

    def record_of(self, i: int) -> int:
        """Item i's record this epoch: its own, or for a class slot the k-th of its bucket's class slots,
        class image (k + epoch * slots) of the bucket's pool (epoch 0: the slot's own record when one
        bucket holds them all)."""
        turn = self._class_turns().get(i)
        if turn is None:
            return self.items[i]
        pool, k, slots = turn
        return pool[(k + self.epoch * slots) % len(pool)]

    def _class_turns(self) -> dict[int, tuple[list[int], int, int]]:
        if self._turns is None:
            self._turns = {}
            for bucket, slots in self.bucket_indices().items():
                slots = [i for i in slots if self.records[self.items[i]].is_class]
                pool = [r for r in self.class_pool if self.record_buckets[r] == bucket]
                self._turns.update({i: (pool, k, len(slots)) for k, i in enumerate(slots) if pool})
        return self._turns

    # ------------------------------------------------------------------ items
    def __getitem__(self, i: int) -> dict:
        i = int(i)
        rng = np.random.default_rng([self.options.seed, self.epoch, i])
        bucket = self.bucket_of(i)
        record, sample = self._resolve(self.record_of(i), bucket, rng)
        rec = self.records[record]
        caption = self.transforms[rec.source](rec.caption, rng)
        sample.update(is_class=rec.is_class, caption=caption, bucket=bucket)
        if self.text_cache is not None:
            sample["encoder_hidden_states"] = self.text_cache[caption]
        elif self.tokenizer is not None:
            sample["input_ids"] = self._input_ids(caption)
        return sample

    def _input_ids(self, caption: str) -> torch.Tensor:
        ids = self._ids.get(caption)
        if ids is None:
            tok = self.tokenizer(caption, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt")
            ids = tok.input_ids[0].to(torch.int64)  # (77,)
            if self.captions_cacheable:
                self._ids[caption] = ids
        return ids

    def _load(self, record: int, bucket: Size, rng: np.random.Generator) -> dict:
        rec, opt = self.records[record], self.options
        flip = opt.flip and bool(rng.random() < 0.5)
        if self.latents is not None:
            mean, std, mask = self.latents.get(record, flip)  # (4, h, w) each; mask (1, h, w) or None
            noise = torch.from_numpy(rng.standard_normal(tuple(mean.shape), dtype=np.float32))
            sample = {"latents": (mean.float() + std.float() * noise) * self.latent_scale}
            return sample if mask is None else {**sample, "loss_mask": mask}
        return load_sample(rec.path, rec.size, bucket, crop=opt.crop, flip=flip, background=opt.background,
                           max_pixels=opt.max_pixels, rng=rng, mask=mask_source(rec, opt.masks),
                           latent_factor=opt.latent_factor)

    def _candidates(self, record: int, bucket: Size) -> Iterator[int]:
        """The record itself, then the others of its bucket (in order after it), then (pixels only,
        resized into this bucket) every other record."""
        yield record
        same = [r for r in self.used_records() if self.record_buckets[r] == bucket]
        start = same.index(record) + 1 if record in same else 0
        yield from same[start:] + same[:start]
        if self.latents is None:
            yield from (r for r in self.used_records() if self.record_buckets[r] != bucket)

    def _resolve(self, record: int, bucket: Size, rng: np.random.Generator) -> tuple[int, dict]:
        last = ""
        for candidate in self._candidates(record, bucket):
            if candidate in self._bad:
                continue
            try:
                return candidate, self._load(candidate, bucket, rng)
            except BadImage as exc:  # a file changed under us: never let it end the epoch
                last = exc.reason
                self.mark_bad(candidate, last)
        raise SdloraError(f"no image of bucket {bucket_name(bucket)} can be loaded any more (last error: {last}); "
                          "check that the dataset folders were not changed during training")

    def mark_bad(self, record: int, reason: str) -> None:
        """Stop using `record` in this process (logged once); its items get another image of the bucket."""
        if record not in self._bad:
            self._bad[record] = reason
            log.warning("could not load %s (%s); its items use another image of bucket %s instead",
                        shown(self.records[record].path), reason, bucket_name(self.record_buckets[record]))

    def drop(self, failed: dict[int, BadImage]) -> None:
        """Remove every item of the `failed` records (listed as skipped with their reasons); the
        buckets follow, as they are read from the items. SdloraError when no training item is left
        (a validation set may end up empty: validation loss is then skipped)."""
        if not failed:
            return
        self.items = [r for r in self.items if r not in failed]
        self.class_pool = [r for r in self.class_pool if r not in failed]
        self._turns = None
        self.skipped = self.skipped + [Skipped(self.records[r].path, e.code, e.reason) for r, e in failed.items()]
        for record, exc in failed.items():
            log.warning("skipping %s: %s", shown(self.records[record].path), exc.reason)
        if not self.items and self.name != "train":
            log.warning("no image of the %s set is left: its loss is not computed", self.name)
        elif not self.items:
            example = next(iter(failed))
            raise SdloraError(f"no image of the {self.name} set can be decoded ({len(failed)} failed, e.g. "
                              f"{shown(self.records[example].path)}: {failed[example].reason}); "
                              "run `sdlora dataset inspect` on the data folders")

    # ------------------------------------------------------------------ reporting
    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """{folder name: {tag: count}} over the images in use, as kohya's `ss_tag_frequency`."""
        return tag_frequency((self.records[r].subset, self.records[r].caption) for r in self.used_records())

    def summary(self) -> dict:
        """Counts for logs and LoRA metadata: images and items, images without any caption (prefix and
        suffix included), repeats per folder (kohya folder, else source folder), skipped files, buckets."""
        used = self.used_records()
        per_source = Counter(self.records[r].source for r in used)
        items_per_source = Counter(self.records[r].source for r in self.items)
        sources = [{"path": shown(p), "images": per_source.get(i, 0), "items": items_per_source.get(i, 0)}
                   for i, p in enumerate(self.source_paths)]
        buckets = Counter(bucket_name(self.record_buckets[r]) for r in self.items)
        folders: dict[str, dict] = {}
        for r in (r for r in used if not self.records[r].is_class):  # class images are paired, not repeated
            entry = folders.setdefault(self.records[r].subset, {"repeats": self.records[r].repeats, "images": 0})
            entry["images"] += 1
        return {
            "name": self.name,
            "images": len(used),
            "class_images": sum(self.records[r].is_class for r in used),
            "items": len(self.items),
            "images_without_caption": sum(not self.full_caption(r) for r in used),
            "folders": dict(sorted(folders.items())),
            "sources": sources,
            "skipped": len(self.skipped),
            "skipped_by_reason": dict(Counter(s.code for s in self.skipped)),
            "buckets": dict(sorted(buckets.items())),
            "latents_cached": self.latents is not None,
            "text_cached": self.text_cache is not None,
        }
