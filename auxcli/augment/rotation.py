"""Rotation by quarter turns: RotNet's pretext task (Gidaris et al. 2018) and SLA's transformations (Lee et
al. 2020, "Self-supervised label augmentation via input transformations").

Both papers put all four rotations (0, 90, 180, 270 degrees) of every image in the batch (`copies="all"`;
RotNet reports this works better than sampling one rotation per image); `copies="one"` draws one rotation
per image instead, keeping the batch size. Rotations are counterclockwise as the image is
displayed (row 0 on top): `torch.rot90(x, k, dims=(-2, -1))`, whose label is k.

The batch changes size with `copies="all"`, so every per-image target is carried along: class labels,
RICAP's mix weights and per-image maps are repeated, pixel maps (N, H, W) are rotated with their pixels.
Two maps are recorded: `rotation` (M,) int64 quarter turns and `rotation_source` (M,) int64, the index of
the original image in the incoming batch (so a task can gather the four copies of one image).

The copies of one image are adjacent (source-major: copy 4j + k is image j turned k times). Four GPUs of the
study each held the four rotations of their 32 images; with the copies adjacent, any contiguous cut of the
batch into whole images (a rank's shard, a ghost-BatchNorm group, `models/batchnorm.py`) holds all four
rotations of its images. Rotation-major copies put one rotation in each quarter of the batch, so ghost
BatchNorm in 4 groups normalised each rotation separately (ResNet-20 logits 4e-2 to 6e-2 off; issue 20).
"""

from __future__ import annotations

from typing import Literal

import torch

from auxcli.augment.targets import Part, Targets, draw_size, drawn_for

NUM_ROTATIONS = 4  # 0, 90, 180, 270 degrees
RotationCopies = Literal["all", "one"]


def _quarter_turns(value: torch.Tensor) -> torch.Tensor:
    """(4, N, ..., H, W): the value rotated by 0, 1, 2, 3 quarter turns counterclockwise."""
    return torch.stack([torch.rot90(value, k, dims=(-2, -1)) for k in range(NUM_ROTATIONS)])


def rotate_copies(
    images: torch.Tensor, targets: Targets, generator: torch.Generator | None = None, *,
    copies: RotationCopies = "all", part: Part | None = None,
) -> tuple[torch.Tensor, Targets]:
    """Rotate square images (N, C, H, W) by quarter turns; returns M images (M = 4N for `all`, N for `one`)
    and their targets.

    `all` lays the copies out source-major: copy i = 4 * j + k is image j turned k times, so every image's
    four copies are adjacent (see the module docstring); it draws nothing from `generator` (it may be None:
    the fixed test views of SLA). `one` turns image j by k_j drawn uniformly from 0..3 with `generator`
    (`part`: drawn for the whole batch, `augment.targets.Part`).
    """
    n, _, height, width = images.shape
    if height != width:
        raise ValueError(f"rotation by quarter turns needs square images, got {height}x{width}")
    if copies not in ("all", "one"):
        raise ValueError(f"rotation copies must be 'all' or 'one', not {copies!r}")
    device = images.device
    if copies == "all":
        rotation = torch.arange(NUM_ROTATIONS, device=device).repeat(n)
        source = torch.arange(n, device=device).repeat_interleave(NUM_ROTATIONS)
    else:
        if generator is None:
            raise ValueError("rotation with copies='one' draws a rotation per image and needs a generator")
        rotation = drawn_for(torch.randint(0, NUM_ROTATIONS, (draw_size(images, part),), generator=generator,
                                           device=device), part)
        source = torch.arange(n, device=device)

    def carry(value: torch.Tensor) -> torch.Tensor:
        if value.dim() >= 3 and value.shape[-2:] == (height, width):  # pixels, or a pixel map
            turned = _quarter_turns(value)
            return turned.transpose(0, 1).flatten(0, 1) if copies == "all" else turned[rotation, source]
        return value[source]  # a per-image value: the same for every copy

    return carry(images), Targets(
        classes={name: carry(labels) for name, labels in targets.classes.items()},
        mix_weights=None if targets.mix_weights is None else carry(targets.mix_weights),
        maps={**{key: carry(value) for key, value in targets.maps.items()},
              "rotation": rotation, "rotation_source": source},
    )
