"""The study's label auxiliary tasks: the same images under another label set (docs/study.md, "Question").

- `gt`: the ground-truth fine labels (100 for CIFAR-100).
- `superclass`: CIFAR-100's 20 coarse labels, or an image folder's `data.superclasses` mapping.
- `random`: one label per image drawn uniformly at random once and then fixed, as in Zhang et al.
  2017 ("Understanding deep learning requires rethinking generalization"). The draw covers the whole
  split and is indexed by `Split.index`, so a `subset` run sees the same random label per image as
  a full run, and every process and machine draws the same labels.

Pure functions: nothing here reads files or keeps state.
"""

from __future__ import annotations

import hashlib

import torch

from auxcli.data.types import ImageData, Split
from auxcli.errors import DataError

LABEL_SETS: tuple[str, ...] = ("gt", "superclass", "random")
_SUPERCLASS_SOURCES = ("use dataset: cifar100 or synthetic, or dataset: folder with a data.superclasses mapping, "
                       "or the gt or random label set")


def labels_for(split: Split, label_set: str, *, random_label_seed: int, split_name: str,
               num_classes: int) -> torch.Tensor:
    """int64 (N,) labels of `split`'s images under `label_set` (gt, superclass or random).

    `num_classes` is the random label set's size (see `num_classes`); `split_name` ("train", "test")
    and `random_label_seed` pick the random draw, which is the same on every call and machine.
    """
    if label_set == "gt":
        return split.fine
    if label_set == "superclass":
        if split.coarse is None:
            raise DataError("label set 'superclass' needs superclass labels, and this data set has none "
                            f"({_SUPERCLASS_SOURCES}).")
        return split.coarse
    if label_set == "random":
        full = random_labels(split.full_size, num_classes=num_classes, random_label_seed=random_label_seed,
                             split_name=split_name)
        return full[split.index]
    raise DataError(f"unknown label set {label_set!r}; allowed: {', '.join(LABEL_SETS)}.")


def random_labels(full_size: int, *, num_classes: int, random_label_seed: int, split_name: str) -> torch.Tensor:
    """int64 (full_size,) labels uniform over `num_classes`, one per image of the full split, fixed by the seeds.

    The generator's seed is a hash of (random_label_seed, split_name), not Python's `hash()`, which
    changes between processes; the train and test draws are therefore independent.
    """
    if num_classes < 1:
        raise DataError(f"random labels need at least one class, got {num_classes}.")
    generator = torch.Generator().manual_seed(_random_label_generator_seed(random_label_seed, split_name))
    return torch.randint(num_classes, (full_size,), generator=generator, dtype=torch.int64)


def num_classes(data: ImageData, label_set: str) -> int:
    """How many classes `label_set` has on `data`: gt and random as many as the data set, superclass as many
    as it has superclasses (20 for CIFAR-100)."""
    if label_set in ("gt", "random"):
        return len(data.classes)
    if label_set == "superclass":
        if data.superclasses is None:
            raise DataError(f"label set 'superclass' needs superclass labels, and {data.name} has none "
                            f"({_SUPERCLASS_SOURCES}).")
        return len(data.superclasses)
    raise DataError(f"unknown label set {label_set!r}; allowed: {', '.join(LABEL_SETS)}.")


def label_set_sizes(data: ImageData) -> dict[str, int]:
    """Label set -> number of classes, for the label sets `data` supports (no superclass without coarse labels)."""
    return {name: num_classes(data, name) for name in LABEL_SETS
            if name != "superclass" or data.superclasses is not None}


def _random_label_generator_seed(random_label_seed: int, split_name: str) -> int:
    digest = hashlib.sha256(f"auxcli-random-labels:{random_label_seed}:{split_name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: any torch.Generator accepts it
