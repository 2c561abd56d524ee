"""Pad-and-crop augmentation and the study's crop-position label.

The study (docs/study.md, "Random crop + classification") pads 32x32 images by 4 and crops
them back to 32x32, so the crop offset lies on a 9x9 grid; the grid is split into 3x3 blocks of 3x3
positions and the auxiliary task classifies which of the 9 blocks the crop came from.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn import functional as F

from auxcli.augment.targets import Part, Targets, draw_size, drawn_for

CropLabel = Literal["sampled", "visible"]
NUM_CROP_BLOCKS = 9  # 3x3 blocks of the offset grid (paper: a 9-way classification)


def random_crop(
    images: torch.Tensor, targets: Targets, generator: torch.Generator, *, padding: int, part: Part | None = None
) -> tuple[torch.Tensor, Targets]:
    """Zero-pad every image by `padding` and crop it back at an offset drawn per image (`part`: the images are
    that part of a batch, and the offsets are drawn for the whole batch, `augment.targets.Part`).

    Matches torchvision's `RandomCrop(32, padding=4)` applied before normalisation: on raw 0..255 pixels
    (uint8 or float; only pixels move, so the dtype is kept) the padding is black (0), and the offset
    (dy, dx) is uniform over 0..2*padding on each axis. The whole batch is cropped by one gather.
    Records `maps["crop_offset"]` (N, 2) int64 (dy, dx): the crop window's top-left corner in padded
    coordinates.
    """
    n, channels, height, width = images.shape
    device = images.device
    offsets = drawn_for(torch.randint(0, 2 * padding + 1, (draw_size(images, part), 2), generator=generator,
                                      device=device), part)
    if padding == 0:
        return images, targets.with_maps(crop_offset=offsets)
    padded = F.pad(images, (padding, padding, padding, padding))
    padded_width = width + 2 * padding
    rows = offsets[:, 0, None] + torch.arange(height, device=device)  # (N, H) padded rows
    cols = offsets[:, 1, None] + torch.arange(width, device=device)  # (N, W) padded columns
    # One gather over the flattened padded plane (faster on CPU than 4-tensor advanced indexing).
    index = (rows[:, :, None] * padded_width + cols[:, None, :]).view(n, 1, height * width)
    cropped = padded.flatten(2).gather(2, index.expand(n, channels, height * width))
    cropped = cropped.view(n, channels, height, width)
    return cropped, targets.with_maps(crop_offset=offsets)


def crop_block(
    offset: torch.Tensor, flipped: torch.Tensor | None, *, padding: int, mode: CropLabel
) -> torch.Tensor:
    """The 9-way crop label: which of the 3x3 blocks of the offset grid holds the offset.

    `offset` (..., 2) holds (dy, dx) in 0..2*padding; `flipped` (...) bool or None. Each axis of the
    (2*padding+1)-position grid is split into 3 blocks, position p falling in block floor(3p / (2*padding+1)):
    with the study's padding 4 that is p // 3, blocks of 3 positions. The label is
    block_y * 3 + block_x, in 0..8.

    `sampled` is the study's label: the sampled offset, even when the image is then flipped.
    `visible` mirrors the horizontal offset of flipped images (dx -> 2*padding - dx), since
    flip(crop(x, dx)) == crop(flip(x), 2*padding - dx): the label then describes what the image shows.
    Works for any leading shape, e.g. (N, 4) per-source offsets after RICAP.
    """
    if mode not in ("sampled", "visible"):
        raise ValueError(f"crop label mode must be 'sampled' or 'visible', not {mode!r}")
    positions = 2 * padding + 1
    dy, dx = offset[..., 0], offset[..., 1]
    if mode == "visible" and flipped is not None:
        dx = torch.where(flipped, 2 * padding - dx, dx)
    block_y = torch.div(dy * 3, positions, rounding_mode="floor")
    block_x = torch.div(dx * 3, positions, rounding_mode="floor")
    return (block_y * 3 + block_x).long()
