"""An endless, resumable stream of training batches over epochs.

The order of an epoch is fixed by (seed, epoch) in BucketBatchSampler, so the position in the data
is just (epoch, batches consumed in it). A checkpoint stores that position as a count of *global*
batches (over all processes), so a run can resume with a different number of processes: each then
skips its share of the epoch. With the same process count, resuming is exact.
"""
from __future__ import annotations

from torch.utils.data import DataLoader

from sdlora.train import rng


class BatchStream:
    """next(stream) -> collated batch; `epoch` counts completed epochs, `position` batches into the current one."""

    def __init__(self, dataset, sampler, collate, *, num_workers: int = 0, epoch: int = 0, position: int = 0):
        self.dataset, self.sampler, self.collate, self.num_workers = dataset, sampler, collate, num_workers
        self.epoch, self.position = epoch, position
        self._it = None

    def __len__(self) -> int:
        """Batches per epoch on this process."""
        return len(self.sampler)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._it is None:
            self.sampler.set_epoch(self.epoch)  # also sets the dataset's epoch (augmentation randomness)
            batches = list(self.sampler)[self.position:]
            # its own generator: creating an iterator must not draw from torch's global RNG (that
            # would shift LoRA dropout masks depending on where in an epoch a run was resumed)
            loader = DataLoader(self.dataset, batch_sampler=batches, collate_fn=self.collate,
                                num_workers=self.num_workers,
                                generator=rng.generator(self.sampler.seed, "loader", self.epoch, self.position))
            self._it, self._left = iter(loader), len(batches)
        batch = next(self._it)
        self.position += 1
        self._left -= 1
        if self._left == 0:  # epoch complete: the next call starts the next one
            self.epoch, self.position, self._it = self.epoch + 1, 0, None
        return batch

    def state(self) -> dict:
        replicas = self.sampler.num_replicas
        return {"epoch": self.epoch, "global_position": self.position * replicas, "num_replicas": replicas}

    @staticmethod
    def resume_position(state: dict, num_replicas: int) -> tuple[int, int]:
        """(epoch, local position) for `num_replicas` processes from a saved state()."""
        return int(state["epoch"]), int(state["global_position"]) // num_replicas
