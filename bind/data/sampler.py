"""A deterministic, rank-sharded, resumable sampler.

The order of epoch ``e`` is a permutation drawn from ``(seed, e)`` alone and split over ranks the way
``DistributedSampler`` does (rank ``r`` takes positions ``r, r + world, ...``), so it does not depend on RNG state
that a checkpoint may not hold. ``position_fn`` (set by the training app) returns ``(epoch, batches done in it)``
from the trainer's step count; each new iteration starts there — the right epoch, mid-epoch if a run was killed
and resumed from a mid-epoch checkpoint. Keys are ``(epoch, index)`` pairs so the dataset can seed per-sample
augmentations (:class:`bind.data.dataset.PairedDataset`).

It subclasses ``DistributedSampler`` only so that Lightning leaves it in place under DDP instead of wrapping it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DistributedSampler


class ResumableSampler(DistributedSampler):
    def __init__(
        self,
        num_samples: int,
        *,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        position_fn: Callable[[], tuple[int, int] | None] | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the dataset is empty")
        self.n, self.batch_size, self.shuffle, self.seed = num_samples, batch_size, shuffle, seed
        self.rank, self.num_replicas, self.drop_last, self.epoch = rank, world_size, drop_last, 0
        self.position_fn = position_fn
        if drop_last:
            usable = num_samples // (world_size * batch_size) * (world_size * batch_size)
            if usable == 0:
                raise ValueError(
                    f"{num_samples} samples make no full batch of {batch_size} on {world_size} rank(s); "
                    "lower the batch size or set drop_last=False"
                )
            self.per_rank = usable // world_size
        else:
            self.per_rank = len(range(rank, num_samples, world_size))

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.per_rank // self.batch_size)

    def __len__(self) -> int:
        return self.per_rank

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """This rank's indices in epoch ``epoch``."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = list(range(self.n))
        if self.drop_last:
            perm = perm[: self.per_rank * self.num_replicas]
        return perm[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.epoch, 0
        position = self.position_fn() if self.position_fn is not None else None
        if position is not None:
            epoch, done = position
            skip = done * self.batch_size
        for i in self.order(epoch)[skip:]:
            yield epoch, i
