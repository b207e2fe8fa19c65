"""Batches from one bucket at a time, deterministic given (seed, epoch), sharded over replicas.

Per epoch: shuffle the items of each bucket, cut them into batches (a bucket's last, smaller batch is
kept, so a bucket with fewer images than a batch still trains), shuffle the batch order, then make
the batch count a multiple of the number of replicas by splitting the largest batches in two. Every
replica then gets the same number of batches (DDP steps in lock-step) and together they see each
item exactly once. Only when every batch is down to one item (batch_size 1, or tiny datasets) and the
count is still not a multiple are a few batches repeated to fill up.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Sampler

# Tensors stacked by `collate` when present in the samples.
STACKED_KEYS = ("pixel_values", "latents", "loss_mask", "input_ids", "encoder_hidden_states")


def split_to_multiple(batches: list[list[int]], replicas: int) -> list[list[int]]:
    """Split the largest batches (first on ties) until len(batches) % replicas == 0; if every batch is a
    single item and that is not enough, repeat batches from the start."""
    batches = [list(b) for b in batches]
    while len(batches) % replicas:
        k = max(range(len(batches)), key=lambda j: (len(batches[j]), -j))
        if len(batches[k]) < 2:
            batches += batches[: replicas - len(batches) % replicas]
            break
        half = len(batches[k]) // 2
        batches[k:k + 1] = [batches[k][:half], batches[k][half:]]
    return batches


class BucketBatchSampler(Sampler):
    """Yields lists of item indices of `dataset`, all from one bucket."""

    def __init__(self, dataset, batch_size: int, *, seed: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.num_replicas, self.rank, self.shuffle = num_replicas, rank, shuffle
        self.groups = dataset.bucket_indices()  # bucket -> item indices; fixed for the run
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating each epoch (also sets the dataset's epoch for augmentation randomness;
        create the DataLoader iterator after this, i.e. don't use persistent_workers)."""
        self.epoch = int(epoch)
        self.dataset.set_epoch(epoch)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """All replicas' batches of `epoch`, in order (replica r takes every num_replicas-th from r)."""
        rng = np.random.default_rng([self.seed, epoch, 3])
        batches = []
        for bucket in sorted(self.groups):
            idx = self.groups[bucket]
            if self.shuffle:
                idx = [idx[j] for j in rng.permutation(len(idx))]
            batches += [idx[k:k + self.batch_size] for k in range(0, len(idx), self.batch_size)]
        if self.shuffle:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return split_to_multiple(batches, self.num_replicas)

    def __iter__(self):
        for batch in self.epoch_batches(self.epoch)[self.rank::self.num_replicas]:
            yield [int(i) for i in batch]

    def __len__(self) -> int:
        """Batches per epoch per replica."""
        total = sum(math.ceil(len(v) / self.batch_size) for v in self.groups.values())
        return math.ceil(total / self.num_replicas)


def collate(samples: list[dict]) -> dict:
    """Stack samples of one bucket: tensors get a batch dimension, `caption` is a list, `is_class` a
    bool tensor (B,), `bucket` the shared (W, H)."""
    buckets = {tuple(s["bucket"]) for s in samples}
    if len(buckets) != 1:
        raise ValueError(f"collate needs samples of one bucket, got {sorted(buckets)}: use BucketBatchSampler")
    batch = {
        "bucket": buckets.pop(),
        "caption": [s["caption"] for s in samples],
        "is_class": torch.tensor([bool(s["is_class"]) for s in samples], dtype=torch.bool),
    }
    for key in STACKED_KEYS:
        if key in samples[0]:
            batch[key] = torch.stack([s[key] for s in samples])
    return batch
