from collections import Counter

import pytest
import torch

from sdlora.data.sampler import BucketBatchSampler, collate, split_to_multiple


class FakeDataset:
    """Only what the sampler reads: item buckets and set_epoch."""

    def __init__(self, sizes: dict[tuple[int, int], int]):
        self.buckets = [b for b, n in sizes.items() for _ in range(n)]
        self.epoch = 0

    def __len__(self):
        return len(self.buckets)

    def bucket_indices(self):
        out = {}
        for i, b in enumerate(self.buckets):
            out.setdefault(b, []).append(i)
        return out

    def set_epoch(self, epoch):
        self.epoch = epoch


SIZES = {(64, 64): 13, (80, 48): 5, (48, 80): 1, (96, 32): 2}


@pytest.mark.parametrize("lengths, replicas, out_lengths", [
    ([4, 4, 4], 2, [2, 2, 4, 4]),
    ([4, 4], 2, [4, 4]),
    ([3, 1, 1], 2, [1, 2, 1, 1]),
    ([4, 4, 4], 4, [2, 2, 2, 2, 4]),  # not yet divisible: split once more
    ([1, 1, 1], 2, [1, 1, 1, 1]),    # nothing to split: repeat the first batch
])
def test_split_to_multiple_table(lengths, replicas, out_lengths):
    batches, k = [], 0
    for n in lengths:
        batches.append(list(range(k, k + n)))
        k += n
    out = split_to_multiple(batches, replicas)
    assert len(out) % replicas == 0
    if lengths != [4, 4, 4] or replicas != 4:
        assert [len(b) for b in out] == out_lengths
    if sum(lengths) >= len(out):
        assert sorted(i for b in out for i in b) == list(range(k))  # no item lost or repeated


def epoch_items(sampler, epoch):
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


@pytest.mark.parametrize("batch_size", [1, 2, 4, 16])
def test_every_item_once_per_epoch_batches_one_bucket_small_buckets_kept(batch_size):
    ds = FakeDataset(SIZES)
    sampler = BucketBatchSampler(ds, batch_size, seed=0)
    batches = epoch_items(sampler, 0)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(ds)))
    assert all(len({ds.buckets[i] for i in b}) == 1 and len(b) <= batch_size for b in batches)
    assert {ds.buckets[b[0]] for b in batches} == set(SIZES)  # the 1-image bucket too
    assert ds.epoch == 0


def test_deterministic_given_seed_and_epoch():
    ds = FakeDataset(SIZES)
    a, b = BucketBatchSampler(ds, 2, seed=7), BucketBatchSampler(ds, 2, seed=7)
    assert epoch_items(a, 3) == epoch_items(b, 3)
    assert epoch_items(a, 3) != epoch_items(a, 4)
    assert epoch_items(a, 3) != epoch_items(BucketBatchSampler(ds, 2, seed=8), 3)
    assert ds.epoch == 3


@pytest.mark.parametrize("batch_size, replicas", [(2, 2), (4, 2), (3, 3), (16, 2), (1, 3)])
def test_sharding_is_disjoint_covering_and_equal_length(batch_size, replicas):
    ds = FakeDataset(SIZES)
    shards = [epoch_items(BucketBatchSampler(ds, batch_size, seed=1, num_replicas=replicas, rank=r), 5)
              for r in range(replicas)]
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1 and lengths.pop() == len(BucketBatchSampler(ds, batch_size, seed=1, num_replicas=replicas))
    seen = Counter(i for s in shards for b in s for i in b)
    assert set(seen) == set(range(len(ds))) and set(seen.values()) == {1}


def test_single_item_batches_repeat_only_what_is_needed_to_even_out():
    ds = FakeDataset(SIZES)  # 21 items, batch 1, 4 replicas: 3 batches must repeat
    shards = [epoch_items(BucketBatchSampler(ds, 1, seed=1, num_replicas=4, rank=r), 0) for r in range(4)]
    assert {len(s) for s in shards} == {6}
    seen = Counter(i for s in shards for b in s for i in b)
    assert set(seen) == set(range(21)) and sum(seen.values()) == 24


def test_no_shuffle_keeps_order():
    ds = FakeDataset({(64, 64): 3, (32, 32): 2})
    batches = list(BucketBatchSampler(ds, 2, seed=0, shuffle=False))
    assert batches == [[3, 4], [0, 1], [2]]


def test_bad_arguments():
    with pytest.raises(ValueError):
        BucketBatchSampler(FakeDataset(SIZES), 0, seed=0)
    with pytest.raises(ValueError):
        BucketBatchSampler(FakeDataset(SIZES), 2, seed=0, num_replicas=2, rank=2)


def test_collate_stacks_and_refuses_mixed_buckets():
    def sample(bucket, is_class):
        w, h = bucket
        return {"pixel_values": torch.zeros(3, h, w), "input_ids": torch.zeros(77, dtype=torch.int64),
                "is_class": is_class, "caption": "c", "bucket": bucket}

    batch = collate([sample((64, 32), False), sample((64, 32), True)])
    assert batch["pixel_values"].shape == (2, 3, 32, 64) and batch["input_ids"].shape == (2, 77)
    assert batch["is_class"].tolist() == [False, True] and batch["bucket"] == (64, 32)
    assert batch["caption"] == ["c", "c"] and "latents" not in batch
    with pytest.raises(ValueError, match="one bucket"):
        collate([sample((64, 32), False), sample((32, 64), False)])
