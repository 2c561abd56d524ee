"""Per-channel normalisation to mean 0 and variance 1 with training-set statistics (the study's recipe)."""

from __future__ import annotations

import torch


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalise raw 0..255 pixels (N, C, H, W), uint8 or float, to float32 with per-channel `mean` and
    `std` (C,) in 0..1 units, as torchvision's `ToTensor()` then `Normalize(mean, std)`:
    (x / 255 - mean) / std, computed as one fused x * (1 / (255 std)) - mean / std."""
    mean = mean.to(device=images.device, dtype=torch.float32)[:, None, None]
    std = std.to(device=images.device, dtype=torch.float32)[:, None, None]
    return torch.addcmul(-mean / std, images.to(torch.float32), 1.0 / (255.0 * std))
