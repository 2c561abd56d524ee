"""The in-memory form of an image-classification data set: whole splits as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Split:
    """One split, whole: the data path slices and augments it as tensors, never per sample."""

    images: torch.Tensor  # uint8 (N, 3, S, S), S = data.image_size (32 for CIFAR)
    fine: torch.Tensor  # int64 (N,) ground-truth labels
    coarse: torch.Tensor | None  # int64 (N,) superclasses (CIFAR-100's, or data.superclasses'); None if none
    index: torch.Tensor  # int64 (N,) position in the full split (stable under `subset`)
    full_size: int  # number of images in the full split before any subset

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class ImageData:
    name: str  # cifar100 | cifar10 | synthetic | folder
    train: Split
    test: Split
    classes: list[str]
    superclasses: list[str] | None
