"""A batch sampler whose batch k is a pure function of (seed, k): resumable and rank-splittable.

Global example g (= k · global_batch + j) is item ``perm_e[g mod N]`` of epoch e = g // N, with
perm_e a permutation drawn from (seed, e). Rank r takes the r-th slice of each global batch,
so two ranks with batch b see exactly the examples one process with batch 2b sees. The
sampler starts at the batch of the trainer's current step, which is how a resumed run picks
up the data stream where the checkpoint left it. It never ends: training length is set by
``max_steps``, not by epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler

from ..seeding import Stream, stream_seed, stream_seeds

__all__ = ["StepBatchSampler"]

_SEED_BLOCK = 1024   # augmentation seeds are hashed this many at a time


class StepBatchSampler(Sampler):
    """Yields lists of ``(index, seed)`` keys, ``batch_size`` per rank, forever.

    Args:
        num_items: dataset length N.
        batch_size: examples per rank per step.
        seed: run seed; permutations and per-example seeds derive from it.
        rank, world_size: this process's slice of each global batch.
        start_batch: callable returning the first batch index to yield (read at ``iter``).
        shuffle: permute each epoch (else epochs walk 0..N-1 in order).
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0,
                 world_size: int = 1, start_batch: Callable[[], int] | None = None,
                 shuffle: bool = True):
        if num_items < 1:
            raise ValueError("cannot sample batches from an empty dataset")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        self.num_items, self.batch_size = int(num_items), int(batch_size)
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.start_batch = start_batch or (lambda: 0)
        self.shuffle = bool(shuffle)
        self._perm_epoch, self._perm = -1, None
        self._seed_block, self._seeds = -1, []

    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batch = int(self.start_batch())
        while True:
            yield self.batch(batch)
            batch += 1

    def batch(self, k: int) -> list[tuple[int, int]]:
        """This rank's keys of global batch ``k``."""
        first = k * self.global_batch_size() + self.rank * self.batch_size
        return [self.key(g) for g in range(first, first + self.batch_size)]

    def key(self, g: int) -> tuple[int, int]:
        """(dataset index, augmentation seed) of global example ``g``."""
        epoch, position = divmod(g, self.num_items)
        return self._index(epoch, position), self._augment_seed(g)

    def _augment_seed(self, g: int) -> int:
        """Word g % 1024 of the AUGMENT stream at g // 1024 (one hash per 1024 examples)."""
        block, offset = divmod(g, _SEED_BLOCK)
        if block != self._seed_block:
            self._seeds = stream_seeds(Stream.AUGMENT, self.seed, block, count=_SEED_BLOCK)
            self._seed_block = block
        return self._seeds[offset]

    def _index(self, epoch: int, position: int) -> int:
        if not self.shuffle:
            return position
        if epoch != self._perm_epoch:
            generator = torch.Generator().manual_seed(stream_seed(Stream.DATA_ORDER, self.seed, epoch))
            self._perm = torch.randperm(self.num_items, generator=generator)
            self._perm_epoch = epoch
        return int(self._perm[position])
