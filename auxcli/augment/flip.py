"""Random horizontal flip, the study's second standard augmentation (probability 1/2 per image)."""

from __future__ import annotations

import torch

from auxcli.augment.targets import Targets


def random_flip(
    images: torch.Tensor, targets: Targets, generator: torch.Generator
) -> tuple[torch.Tensor, Targets]:
    """Mirror each image left-right with probability 1/2 (torchvision's RandomHorizontalFlip default,
    the study's recipe). Records `maps["flipped"]` (N,) bool."""
    flipped = torch.rand(images.shape[0], generator=generator, device=images.device) < 0.5
    images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
    return images, targets.with_maps(flipped=flipped)
