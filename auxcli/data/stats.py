"""Per-channel statistics for input normalisation.

The study normalises every input channel to mean 0 and variance 1 with statistics over the training
set (docs/study.md, "Training recipe"). They are computed exactly: sums of the uint8 values and of their
squares are integers, accumulated chunk by chunk, so the result does not depend on chunking or order
and no float copy of the whole split is ever made.
"""

from __future__ import annotations

import torch

_CHUNK_IMAGES = 4096  # 4096 x 3 x 32 x 32 int64 values = 100 MB at most per chunk


def channel_stats(images: torch.Tensor, *, chunk_images: int = _CHUNK_IMAGES) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 (N, C, H, W) `images`, in [0, 1] units.

    Returns two float64 (C,) tensors; the standard deviation is the population one (divides by the
    number of values), as torchvision's and most CIFAR normalisation constants are.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"channel_stats needs a non-empty uint8 (N, C, H, W) tensor, got {images.dtype} "
                         f"{tuple(images.shape)}")
    channels = images.shape[1]
    total = [0] * channels
    total_sq = [0] * channels
    for start in range(0, images.shape[0], chunk_images):
        chunk = images[start:start + chunk_images].to(torch.int64)
        for c, (s, sq) in enumerate(zip(chunk.sum(dim=(0, 2, 3)).tolist(),
                                        chunk.square().sum(dim=(0, 2, 3)).tolist())):
            total[c] += s
            total_sq[c] += sq
    count = images.numel() // channels
    # Exact integers until the last step: var * count^2 = count * sum(x^2) - sum(x)^2.
    mean = [s / (count * 255) for s in total]
    std = [((count * sq - s * s) ** 0.5) / (count * 255) for s, sq in zip(total, total_sq)]
    return torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
