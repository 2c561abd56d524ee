"""The training and evaluation transforms, composed from the spec's `augment` section.

Order (docs/study.md; official Cutout train.py; official RICAP): random crop -> horizontal flip -> normalise
(to float32) -> Cutout -> RICAP -> rotation (RotNet and SLA rotate the augmented image; with
`copies: all` the batch leaves four times larger). Crop and flip only move pixels, so they run on the
uint8 images (a quarter of the memory traffic) with results identical to cropping floats. Cutout zeroes
pixels after normalisation, as the official Cutout code; RICAP patches images that were each cropped and
flipped already, as the study describes.

A rank of a torchrun job augments its share of the global batch (`part`, `augment.targets.Part`): every
transform draws for the whole global batch and transforms only the share's images, so they come out as in
one process. RICAP patches its images from any image of the global batch, so with RICAP the whole global
batch is augmented and the share's rows kept.

Every transform runs on the device of its input and draws only from the given generator, which must live
on that device: the training loop creates `torch.Generator(device=images.device)` and seeds it, and
evaluates the augmented auxiliary tasks on test images with a freshly seeded one, so they see the same
augmentations every epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from auxcli.augment.crop import random_crop
from auxcli.augment.cutout import cutout
from auxcli.augment.flip import random_flip
from auxcli.augment.normalize import normalize
from auxcli.augment.ricap import ricap
from auxcli.augment.rotation import rotate_copies
from auxcli.augment.targets import Part, Targets, take_images

if TYPE_CHECKING:
    from auxcli.spec import AugmentSpec

TrainAugment = Callable[[torch.Tensor, Targets, torch.Generator], tuple[torch.Tensor, Targets]]
EvalTransform = Callable[[torch.Tensor], torch.Tensor]


def build_train_augment(augment: AugmentSpec, mean: torch.Tensor, std: torch.Tensor) -> TrainAugment:
    """The training transform: uint8 images (N, 3, H, W) on the device, their targets and a generator
    on the same device -> float32 normalised images and the targets the augmentations recorded.
    `mean` and `std` (3,) are the training set's per-channel statistics in 0..1 units. With `part`, the
    images are a whole global batch and only the part's images (and their copies) come back, augmented
    exactly as in the whole batch (see the module docstring)."""

    def train_augment(
        images: torch.Tensor, targets: Targets, generator: torch.Generator, part: Part | None = None
    ) -> tuple[torch.Tensor, Targets]:
        if part is not None and augment.ricap is not None:
            return take_images(*train_augment(images, targets, generator), *part)
        if part is not None:
            images, targets = take_images(images, targets, *part)
        if augment.crop is not None:
            images, targets = random_crop(images, targets, generator, padding=augment.crop.padding, part=part)
        if augment.flip:
            images, targets = random_flip(images, targets, generator, part=part)
        images = normalize(images, mean, std)
        if augment.cutout is not None:
            images, targets = cutout(images, targets, generator, size=augment.cutout.size, part=part)
        if augment.ricap is not None:
            images, targets = ricap(images, targets, generator, beta=augment.ricap.beta,
                                    keep_off_edges=augment.ricap.keep_off_edges)
        if augment.rotation is not None:
            images, targets = rotate_copies(images, targets, generator, copies=augment.rotation.copies, part=part)
        return images, targets

    train_augment.augments_parts = True  # the training loop may hand it a rank's part (`train.loop`)
    return train_augment


def build_eval_transform(mean: torch.Tensor, std: torch.Tensor) -> EvalTransform:
    """The clean test transform (the study's, and torchvision's ToTensor + Normalize): uint8 images
    (N, 3, H, W) -> float32 normalised images, no augmentation."""

    def eval_transform(images: torch.Tensor) -> torch.Tensor:
        return normalize(images, mean, std)

    return eval_transform
