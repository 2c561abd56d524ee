"""Cutout (DeVries & Taylor 2017): zero one square per image, recording the zeroed pixels.

Follows the official code (uoguelph-mlrg/Cutout, util/cutout.py and train.py): the square's centre is
uniform over the image's integer pixel positions (`np.random.randint(h)`), the square is clipped at the
border, and Cutout runs after crop, flip, `ToTensor` and `Normalize`, so the cut pixels are 0 in
normalised units (the data set's mean colour), not black. The study (docs/study.md) applies it after crop and
flip with size 16 and segments the cut-out region as its auxiliary task.
"""

from __future__ import annotations

import torch

from auxcli.augment.targets import Part, Targets, draw_size, drawn_for


def cutout(
    images: torch.Tensor, targets: Targets, generator: torch.Generator, *, size: int, part: Part | None = None
) -> tuple[torch.Tensor, Targets]:
    """Set a `size` x `size` square of every (normalised) image to 0, its centre (cy, cx) drawn
    uniformly from 0..H-1 x 0..W-1 per image; the square covers rows cy - size//2 .. cy - size//2 + size - 1
    (likewise columns), clipped at the border.

    For even sizes (the study's 16) this is the official [y - size//2, y + size//2) window; for odd sizes
    the official window is one pixel short (size - 1), here it is exactly `size`.
    Records `maps["cutout_mask"]` (N, H, W) bool: exactly the pixels set to 0. The mask comes from
    broadcast comparisons of coordinate grids, no loop over samples. `part`: see `augment.targets.Part`.
    """
    _, _, height, width = images.shape
    device, drawn = images.device, draw_size(images, part)
    top = drawn_for(torch.randint(0, height, (drawn,), generator=generator, device=device), part) - size // 2
    left = drawn_for(torch.randint(0, width, (drawn,), generator=generator, device=device), part) - size // 2
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)  # (N, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :]  # (N, H, W)
    images = images.masked_fill(mask[:, None], 0.0)
    return images, targets.with_maps(cutout_mask=mask)
