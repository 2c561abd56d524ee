"""Batches as index slices of a device-resident split, in a seed-determined order.

Each epoch's order is a permutation drawn from (seed, epoch) alone, so a resumed run sees exactly the
order an uninterrupted one would (and ranks of a distributed run could split the same order).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible 63-bit seed per (run seed, epoch, stream)."""
    return (seed * 1_000_003 + epoch * 9_176 + stream * 7_919_001) % (2**63 - 1)


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
