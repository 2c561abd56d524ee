"""Random horizontal flip, the study's second standard augmentation (probability 1/2 per image)."""

from __future__ import annotations

import torch

from auxcli.augment.targets import Part, Targets, draw_size, drawn_for


def random_flip(
    images: torch.Tensor, targets: Targets, generator: torch.Generator, *, part: Part | None = None
) -> tuple[torch.Tensor, Targets]:
    """Mirror each image left-right with probability 1/2 (torchvision's RandomHorizontalFlip default,
    the study's recipe). Records `maps["flipped"]` (N,) bool. `part`: see `augment.targets.Part`."""
    flipped = drawn_for(torch.rand(draw_size(images, part), generator=generator, device=images.device) < 0.5, part)
    images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
    return images, targets.with_maps(flipped=flipped)
