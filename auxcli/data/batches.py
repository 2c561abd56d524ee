"""Batches as index slices of a device-resident split, in a seed-determined order.

Each epoch's order is a permutation drawn from (seed, epoch) alone, so a resumed run sees exactly the
order an uninterrupted one would, and the ranks of a torchrun job split the same order: every global
batch (`train.batch_size` images) is cut into `world_size` contiguous shards, rank r taking shard r
(`Shard`), so the union of one step's shards is exactly the one-process batch.

Augmentations belong to the global batch, not to a rank: step s of an epoch draws from a generator seeded
by (seed, epoch, s) (`step_seed`), every rank draws for the whole global batch and transforms its shard's
images (`augment.targets.Part`; with RICAP the whole batch, keeping the shard's rows). So sample i of step s
is augmented identically for any world size, and RICAP mixes over the global batch with one boundary per
step, as the public PyramidNet and RICAP code (`nn.DataParallel`) does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible 63-bit seed per (run seed, epoch, stream)."""
    return (seed * 1_000_003 + epoch * 9_176 + stream * 7_919_001) % (2**63 - 1)


def augment_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's augmentations (stream 1): a function of (seed, epoch) only, the same on every
    rank, so draws do not depend on the world size or scheduling and a restarted job sees the same ones."""
    return epoch_seed(seed, epoch, stream=1)


def step_seed(epoch_augment_seed: int, step: int) -> int:
    """The seed of step `step`'s augmentations from the epoch's `augment_seed`: every step starts from its
    own seed, so its draws do not depend on how much the steps before it drew."""
    return (epoch_augment_seed * 1_000_003 + (step + 1) * 2_654_435_761) % (2**63 - 1)


def epoch_permutation(num_images: int, *, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(num_images, generator=generator)


def images_in_batches(num_images: int, batch_size: int, drop_last: bool) -> int:
    """How many of `num_images` the batches of `batch_indices` hold."""
    return num_images - num_images % batch_size if drop_last and num_images >= batch_size else num_images


def batch_indices(order: torch.Tensor, batch_size: int, *, drop_last: bool = False) -> Iterator[torch.Tensor]:
    """Consecutive slices of `order`; the last batch may be smaller, unless `drop_last` drops it (static
    shapes for compiled code; a split smaller than one batch keeps its one batch)."""
    for start in range(0, images_in_batches(order.numel(), batch_size, drop_last), batch_size):
        yield order[start:start + batch_size]


@dataclass(frozen=True)
class Shard:
    """Rank `rank` of `world_size`: which part of each global batch this process trains on."""

    rank: int = 0
    world_size: int = 1

    def of(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a global batch: `torch.tensor_split` into `world_size` parts
        (equal when the size divides; else the first parts are one longer)."""
        if self.world_size == 1:
            return batch
        return batch.tensor_split(self.world_size)[self.rank]

    def start(self, size: int) -> int:
        """Where this rank's part (`of`) begins in a global batch of `size` images."""
        return self.rank * (size // self.world_size) + min(self.rank, size % self.world_size)


class ShardBatch(NamedTuple):
    index: torch.Tensor  # this rank's images of the global batch
    loss_scale: float  # the factor this rank's mean loss is multiplied by (1.0 in one process)
    global_size: int  # images in the global batch, over all ranks
    batch: torch.Tensor  # the whole global batch (every rank draws its augmentations)
    start: int  # where `index` begins in `batch`


def sharded_batches(order: torch.Tensor, batch_size: int, shard: Shard = Shard(), *,
                    drop_last: bool = False) -> Iterator[ShardBatch]:
    """This rank's part of every global batch of `order`, with the factor its mean loss is scaled by.

    DistributedDataParallel averages gradients over ranks; scaling rank r's mean loss by
    n_r * world_size / n makes that average the gradient of the mean loss over the whole global batch of
    n images, also for a last batch that does not split evenly (the factor is 1.0 when it does). A last
    batch smaller than the world size cannot give every rank an image and is skipped by every rank
    (one process never skips anything). `drop_last` drops a last partial batch (see `batch_indices`)."""
    for batch in batch_indices(order, batch_size, drop_last=drop_last):
        if batch.numel() < shard.world_size:
            continue
        part = shard.of(batch)
        yield ShardBatch(part, part.numel() * shard.world_size / batch.numel(), batch.numel(), batch,
                         shard.start(batch.numel()))
