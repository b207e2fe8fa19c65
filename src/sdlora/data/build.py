"""`build_datasets(cfg, tokenizer, seed=...)`: from a DataConfig to the train and validation datasets.

Scan every source once, assign buckets, drop (no_upscale) or warn about images smaller than their
bucket, split off the validation fraction per instance source, pair DreamBooth class images with
instance items, and warn about captions CLIP will truncate.

DreamBooth pairing: when class sources exist, each epoch holds as many class items as instance items
(class images cycled in a seeded order; class sources' `repeats` are not used). With more class
images than instance items, each epoch takes the next ones in that order, so every class image is used.
"""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from sdlora.data.buckets import BucketSpec, Size, assign_bucket, bucket_name, make_buckets, needs_upscale
from sdlora.data.captions import MAX_CAPTION_TOKENS, CaptionTransform, too_long
from sdlora.data.dataset import LoRADataset, SampleOptions
from sdlora.data.files import shown
from sdlora.data.images import IMAGE_EXTENSIONS, SKIP_CODES, parse_background
from sdlora.data.masks import check_masks, find_masks, mask_dirs
from sdlora.data.sources import ImageRecord, SourceScan, Skipped, scan_sources
from sdlora.errors import SdloraError

log = logging.getLogger("sdlora.data")


def counted(n: int, one: str, many: str) -> str:
    """counted(1, "image is", "images are") -> "1 image is" (warnings read as plain sentences)."""
    return f"{n} {one if n == 1 else many}"


def caption_transforms(cfg) -> dict[int, CaptionTransform]:
    return {i: CaptionTransform(prefix=s.caption_prefix, suffix=s.caption_suffix, shuffle_tags=cfg.shuffle_tags,
                                keep_tokens=cfg.keep_tokens, tag_dropout=cfg.tag_dropout,
                                caption_dropout=cfg.caption_dropout) for i, s in enumerate(cfg.sources)}


def apply_buckets(records: list[ImageRecord], buckets: list[Size], no_upscale: bool
                  ) -> tuple[list[ImageRecord], list[Size], list[Skipped], list[ImageRecord]]:
    """-> (kept records, their buckets, skipped as too small, kept records that will be upscaled)."""
    kept, kept_buckets, skipped, upscaled = [], [], [], []
    for rec in records:
        bucket = assign_bucket(rec.size, buckets)
        if needs_upscale(rec.size, bucket):
            if no_upscale:
                skipped.append(Skipped(rec.path, "too_small", f"{SKIP_CODES['too_small']}: {rec.width}x{rec.height} "
                                                              f"< bucket {bucket_name(bucket)}"))
                continue
            upscaled.append(rec)
        kept.append(rec)
        kept_buckets.append(bucket)
    return kept, kept_buckets, skipped, upscaled


def split_validation(records: list[ImageRecord], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): per instance source, round(fraction * n) images (at least 1 when the
    fraction is positive, and never the last one) go to validation. Class images always train."""
    val: list[int] = []
    if fraction > 0:
        for source in sorted({r.source for r in records if not r.is_class}):
            own = [i for i, r in enumerate(records) if r.source == source and not r.is_class]
            n = min(max(1, round(fraction * len(own))), len(own) - 1)
            order = np.random.default_rng([seed, source, 7]).permutation(len(own))
            val.extend(own[j] for j in order[:n])
    chosen = set(val)
    return [i for i in range(len(records)) if i not in chosen], sorted(val)


def class_order(records: list[ImageRecord], indices: list[int], seed: int) -> list[int]:
    """The class records among `indices` in the run's seeded order (the order epochs take them in)."""
    classes = [i for i in indices if records[i].is_class]
    return [classes[j] for j in np.random.default_rng([seed, 11]).permutation(len(classes))]


def expand_items(records: list[ImageRecord], indices: list[int], seed: int) -> list[int]:
    """Repeat each instance record `repeats` times; add class records paired 1:1 with instance items
    (epoch 0's; LoRADataset hands each class slot the next class images in later epochs)."""
    items = [i for i in indices if not records[i].is_class for _ in range(records[i].repeats)]
    order = class_order(records, indices, seed)
    if order and items:
        need = len(items)
        if len(order) > need:
            log.info("using %d of %d class images per epoch, the next ones each epoch (paired 1:1 with "
                     "instance items)", need, len(order))
        items += [order[k % len(order)] for k in range(need)]
    return items


def _no_images_error(cfg, skipped: list[Skipped]) -> SdloraError:
    paths = ", ".join(shown(s.path) for s in cfg.sources)
    if not skipped:
        exts = " ".join(sorted(IMAGE_EXTENSIONS))
        return SdloraError(f"no image files found in data.sources ({paths}); supported extensions: {exts}")
    reasons = ", ".join(f"{n} {code}" for code, n in Counter(s.code for s in skipped).most_common())
    return SdloraError(f"no usable image in data.sources ({paths}): all {len(skipped)} image files were skipped "
                       f"({reasons}); run `sdlora dataset inspect` for the list")


def _warn(records: list[ImageRecord], upscaled: list[ImageRecord], transforms, tokenizer) -> None:
    if upscaled:
        e = upscaled[0]
        log.warning("%s and will be upscaled (e.g. %s, %dx%d); set data.no_upscale to skip them",
                    counted(len(upscaled), "image is smaller than its bucket", "images are smaller than their bucket"),
                    shown(e.path), e.width, e.height)
    dupes = len(records) - len({r.digest for r in records})
    if dupes:
        log.warning("%s exact duplicates of other images (same bytes)", counted(dupes, "image is", "images are"))
    if tokenizer is not None:
        captions = sorted({transforms[r.source].full(r.caption) for r in records})
        long = too_long(tokenizer, captions)
        if long:
            log.warning("%s longer than %d tokens and will be truncated at CLIP's 77-token limit "
                        "(e.g. %d tokens: %.80s...)", counted(len(long), "caption is", "captions are"),
                        MAX_CAPTION_TOKENS, long[0][1], long[0][0])


def log_folders(scans: list[SourceScan]) -> None:
    """One line per source saying which kohya `N_name` folders were read and their repeats."""
    for scan in scans:
        if scan.folders:
            log.info("%s: kohya folders read: %s", shown(scan.path), ", ".join(
                f"{name} ({f['repeats']} repeats, {counted(f['images'], 'image', 'images')})"
                for name, f in scan.folders.items()))


def build_datasets(cfg, tokenizer, *, seed: int, latent_factor: int = 8) -> tuple[LoRADataset, LoRADataset | None]:
    """The training dataset and, when cfg.validation_split > 0, the validation one (no augmentation).
    `latent_factor`: the VAE's downsampling factor (`cache.vae_factor`), the resolution of loss masks."""
    if not cfg.sources:
        raise SdloraError("data.sources is empty: add a [[data.sources]] table with the path of an image folder")
    options = SampleOptions(crop=cfg.crop, flip=cfg.flip, background=parse_background(cfg.background),
                            max_pixels=cfg.max_image_pixels, seed=seed, masks=cfg.masks,
                            latent_factor=latent_factor)
    if cfg.masks == "folder":
        mask_dirs(cfg)  # a missing or misplaced mask folder fails before the scan
    scans = scan_sources(cfg.sources, max_pixels=cfg.max_image_pixels)
    check_masks(find_masks(scans, cfg))
    records = [r for s in scans for r in s.records]
    skipped = [k for s in scans for k in s.skipped]
    records, buckets, too_small, upscaled = apply_buckets(records, make_buckets(BucketSpec.from_config(cfg)),
                                                          cfg.no_upscale)
    log_folders(scans)
    for skip in too_small:
        log.warning("skipping %s: %s", shown(skip.path), skip.reason)
    skipped += too_small
    if not records:
        raise _no_images_error(cfg, skipped)
    if all(r.is_class for r in records):
        raise SdloraError("data.sources holds only class images (role = \"class\"): add an instance source")
    transforms = caption_transforms(cfg)
    _warn(records, upscaled, transforms, tokenizer)
    train_idx, val_idx = split_validation(records, cfg.validation_split, seed)
    paths = [s.path for s in scans]
    train = LoRADataset(records, buckets, expand_items(records, train_idx, seed), transforms, options, tokenizer,
                        name="train", source_paths=paths, skipped=skipped,
                        class_pool=class_order(records, train_idx, seed))
    val = None
    if val_idx:
        static = {i: t.static() for i, t in transforms.items()}
        val_options = SampleOptions(crop="center", flip=False, background=options.background,
                                    max_pixels=options.max_pixels, seed=seed, masks=options.masks,
                                    latent_factor=latent_factor)
        val = LoRADataset(records, buckets, val_idx, static, val_options, tokenizer, name="validation",
                          source_paths=paths)
    log.info("dataset: %d images (%d items per epoch) in %d buckets, %d skipped%s", len(train.used_records()),
             len(train), len(set(train.record_buckets[r] for r in train.items)), len(skipped),
             f", {len(val_idx)} held out for validation" if val_idx else "")
    return train, val
