"""What a batch carries besides its images: labels per head and the targets augmentations create."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

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
