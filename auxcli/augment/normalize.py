"""Per-channel normalisation to mean 0 and variance 1 with training-set statistics (the study's recipe)."""

from __future__ import annotations

import torch


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalise raw 0..255 pixels (N, C, H, W) with per-channel `mean` and `std` (C,) in 0..1 units,
    as torchvision's `ToTensor()` then `Normalize(mean, std)`: (x / 255 - mean) / std."""
    scale = 255.0 * std.to(device=images.device, dtype=images.dtype)
    shift = 255.0 * mean.to(device=images.device, dtype=images.dtype)
    return (images - shift[:, None, None]) / scale[:, None, None]
