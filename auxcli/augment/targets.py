"""What a batch carries besides its images: labels per head and the targets augmentations create."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch


@dataclass(frozen=True)
class Targets:
    """Targets of one batch.

    `classes` maps a head name ("main", "aux") to its class labels: shape (N,) before mixing, (N, K)
    after RICAP mixes K=4 source images, with `mix_weights` (N, K) holding each source's area share.
    `maps` holds what augmentations record for auxiliary tasks and later transforms:
    "crop_offset" (N, 2) int64 (dy, dx) in 0..2*padding, "flipped" (N,) bool,
    "cutout_mask" (N, H, W) bool, "ricap_sources" (N, H, W) int64 in 0..3.
    RICAP (augment/ricap.py) re-patches the pixel maps with their pixels and turns per-image maps into
    one entry per source, like the labels: "crop_offset" (N, 4, 2), "flipped" (N, 4).
    """

    classes: dict[str, torch.Tensor]
    mix_weights: torch.Tensor | None = None
    maps: dict[str, torch.Tensor] = field(default_factory=dict)

    def with_maps(self, **maps: torch.Tensor) -> Targets:
        return replace(self, maps={**self.maps, **maps})


# Maps whose values are positions in the batch a transform received (rotation copies name their image).
BATCH_POSITION_MAPS = ("rotation_source",)


def take_images(images: torch.Tensor, targets: Targets, start: int, count: int, total: int
                ) -> tuple[torch.Tensor, Targets]:
    """Incoming images `start` .. `start + count - 1` of a transformed batch of `total` incoming images:
    every row that came from them and its targets. A transform's output holds the same number of rows per
    image, the rows of one image adjacent (`augment/rotation.py`), so this is one contiguous slice;
    positions recorded in `BATCH_POSITION_MAPS` are renumbered from 0, as if only these images had come in."""
    if start == 0 and count == total:
        return images, targets
    per_image = images.shape[0] // total
    rows = slice(start * per_image, (start + count) * per_image)

    def take(key: str, value: torch.Tensor) -> torch.Tensor:
        return value[rows] - start if key in BATCH_POSITION_MAPS else value[rows]

    return images[rows], Targets(
        classes={name: labels[rows] for name, labels in targets.classes.items()},
        mix_weights=None if targets.mix_weights is None else targets.mix_weights[rows],
        maps={key: take(key, value) for key, value in targets.maps.items()})


class Part(NamedTuple):
    """Images `start` .. `start + count - 1` of a batch of `total` (a rank's share of a global batch): a
    transform given a part draws for all `total` images, in the order it would for the whole batch, and
    transforms only the part's, so the part's images come out exactly as in the whole batch."""

    start: int
    count: int
    total: int

    def drawn(self, draws: torch.Tensor) -> torch.Tensor:
        """The part's rows of draws made for the whole batch."""
        return draws[self.start:self.start + self.count]


def draw_size(images: torch.Tensor, part: Part | None) -> int:
    """How many images a transform draws for: the whole batch of which `images` are `part`."""
    return images.shape[0] if part is None else part.total


def drawn_for(draws: torch.Tensor, part: Part | None) -> torch.Tensor:
    return draws if part is None else part.drawn(draws)
