import pytest

from sdlora.data import BucketBatchSampler
from sdlora.train.batches import BatchStream


class Items:
    """Stand-in dataset: item i is i; two buckets."""

    def __init__(self, n=10):
        self.n, self.epoch = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return (self.epoch, i)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def bucket_indices(self):
        return {(64, 64): [i for i in range(self.n) if i % 2], (32, 32): [i for i in range(self.n) if not i % 2]}


def stream(replicas=1, rank=0, **kw):
    data = Items()
    sampler = BucketBatchSampler(data, 2, seed=3, num_replicas=replicas, rank=rank)
    return BatchStream(data, sampler, list, **kw)


def test_epochs_roll_over_and_every_item_is_seen():
    s = stream()
    assert len(s) == 6  # 5 + 5 items in batches of 2 -> 3 + 3 batches
    first = [next(s) for _ in range(6)]
    assert s.epoch == 1 and s.position == 0
    assert sorted(i for b in first for e, i in b) == list(range(10)) and {e for b in first for e, _ in b} == {0}
    second = [next(s) for _ in range(6)]
    assert {e for b in second for e, _ in b} == {1} and first != second


@pytest.mark.parametrize("stop", [0, 2, 5, 6, 9])
def test_resume_from_state_continues_exactly(stop):
    s = stream()
    whole = [next(s) for _ in range(14)]
    s = stream()
    for _ in range(stop):
        next(s)
    epoch, position = BatchStream.resume_position(s.state(), 1)
    resumed = stream(epoch=epoch, position=position)
    assert [next(resumed) for _ in range(14 - stop)] == whole[stop:]


def test_resume_with_another_process_count_keeps_the_global_position():
    s0, s1 = stream(2, 0), stream(2, 1)
    for _ in range(2):
        next(s0), next(s1)
    state = s0.state()
    assert state == {"epoch": 0, "global_position": 4, "num_replicas": 2}
    assert BatchStream.resume_position(state, 1) == (0, 4)
    assert BatchStream.resume_position(state, 4) == (0, 1)
