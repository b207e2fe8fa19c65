"""The data phase of a run: datasets built and cached, the batch sampler, the resumable batch stream.

    prepare_data   datasets (train, held-out) with latents / text outputs cached as configured
    make_sampler   bucketed batches, sharded over processes, deterministic given (seed, epoch)
    make_stream    the endless stream, positioned where a resumed run left off
    total_steps    optimizer steps of the run (train.steps, or train.epochs x batches per epoch)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sdlora.config import RunConfig
from sdlora.models.components import SDComponents
from sdlora.train.batches import BatchStream


@dataclass
class Data:
    train: object  # LoRADataset
    val: object | None
    text_cached: bool
    latents_cached: bool


def prepare_data(cfg: RunConfig, components: SDComponents, accelerator, cache_dir: str) -> Data:
    """Build the datasets and cache latents / text outputs (the main process writes disk caches first)."""
    from sdlora.data import build_datasets, cache_latents, cache_text, vae_factor

    train, val = build_datasets(cfg.data, components.tokenizer, seed=cfg.train.seed,
                                latent_factor=vae_factor(components.vae))  # loss masks at latent resolution
    device, show = accelerator.device, accelerator.is_local_main_process
    latents = cfg.data.cache_latents != "off"
    text = cfg.data.cache_text and not cfg.lora.train_text_encoder and not cfg.embeddings.tokens  # both change it
    with accelerator.main_process_first():
        for dataset in (d for d in (train, val) if d is not None):
            if latents:
                cache_latents(dataset, components.vae, mode=cfg.data.cache_latents, cache_dir=cache_dir,
                              device=device, num_workers=cfg.data.num_workers, progress=show)
            if text:
                text = cache_text(dataset, components.text_encoder, device=device, progress=show) and text
    return Data(train, val, text_cached=bool(text), latents_cached=latents)


def make_sampler(cfg: RunConfig, dataset, acc, shuffle: bool = True):
    from sdlora.data import BucketBatchSampler

    return BucketBatchSampler(dataset, cfg.train.batch_size, seed=cfg.train.seed, num_replicas=acc.num_processes,
                              rank=acc.process_index, shuffle=shuffle)


def make_stream(cfg: RunConfig, data: Data, sampler, stream_state: dict, num_processes: int) -> BatchStream:
    from sdlora.data import collate

    epoch, position = BatchStream.resume_position(stream_state, num_processes)
    workers = 0 if data.latents_cached else cfg.data.num_workers  # cached items cost nothing to load
    return BatchStream(data.train, sampler, collate, num_workers=workers, epoch=epoch, position=position)


def val_batches(cfg: RunConfig, dataset) -> list[dict]:
    """The held-out set as fixed batches (no shuffling: the same batches at every validation)."""
    if dataset is None or not cfg.validation.loss_every_n_steps:
        return []
    from sdlora.data import BucketBatchSampler, collate

    sampler = BucketBatchSampler(dataset, cfg.train.batch_size, seed=cfg.train.seed, shuffle=False)
    return [collate([dataset[i] for i in batch]) for batch in sampler]


def total_steps(cfg: RunConfig, batches_per_epoch: int) -> int:
    if cfg.train.epochs is not None:
        return cfg.train.epochs * max(1, math.ceil(batches_per_epoch / cfg.train.grad_accum))
    return cfg.train.steps
