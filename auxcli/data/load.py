"""`load_data`: the spec's `data:` section in, both splits as tensors out.

cifar100 and cifar10 come from their official archives (cifar.py); synthetic archives are generated on
first use (synthetic.py) and then read by the same CIFAR-100 code; `folder` reads the user's own
`train/<class>/` and `test/<class>/` images (folder.py). Every data set comes out at `image_size` pixels
(CIFAR's 32x32 resized like folder images when another size is asked for). `subset: N` keeps the first N
training images of each class in file order; `Split.index` keeps each image's place in the full split,
which is what the random label set is indexed by (labelsets.py).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from auxcli.data.cifar import expected_md5s, load_cifar10, load_cifar100
from auxcli.data.folder import load_folder, resize_square
from auxcli.data.synthetic import ARCHIVE_FOLDER, archive_class, synthesize_cifar100, synthetic_folder
from auxcli.data.types import ImageData, Split
from auxcli.data.verify import check_files
from auxcli.errors import DataError
from auxcli.project import anchored
from auxcli.spec import DataSpec


def load_data(spec: DataSpec) -> ImageData:
    """The data set `spec` names, with `spec.subset` applied to the training split."""
    root = anchored(spec.root)
    if spec.dataset == "cifar100":
        data = load_cifar100(root, download=spec.download)
    elif spec.dataset == "cifar10":
        data = load_cifar10(root, download=spec.download)
    elif spec.dataset == "synthetic":
        params = {"train_per_class": spec.synthetic.train_per_class,
                  "test_per_class": spec.synthetic.test_per_class, "seed": spec.synthetic.seed}
        data = load_synthetic(synthetic_folder(root, **params), params)
    elif spec.dataset == "folder":
        data = load_folder(root, image_size=spec.image_size,
                           superclasses=anchored(spec.superclasses) if spec.superclasses else None)
    else:
        raise DataError(f"unknown dataset {spec.dataset!r}; allowed: cifar100, cifar10, synthetic, folder.")
    if data.train.images.shape[-1] != spec.image_size:
        data = replace(data, train=replace(data.train, images=resize_square(data.train.images, spec.image_size)),
                       test=replace(data.test, images=resize_square(data.test.images, spec.image_size)))
    if spec.subset is not None:
        data = replace(data, train=subset_per_class(data.train, spec.subset))
    return data


def load_synthetic(root: Path, params: dict | None = None) -> ImageData:
    """The generated archive in `root/cifar-100-python/`, generated first from `params` if it is absent.

    `params` are `synthesize_cifar100`'s keyword arguments; without them a missing archive is an error.
    The files are checked against the manifest before torchvision reads them, so that damage gets a
    message about regenerating rather than downloading.
    """
    archive = Path(root) / ARCHIVE_FOLDER
    if params is not None:
        synthesize_cifar100(root, **params)  # writes it, or checks the one there against params and manifest
        dataset_cls = archive_class(archive)
    else:
        dataset_cls = archive_class(archive)
        damaged = [check for check in check_files(archive, expected_md5s(dataset_cls)) if check.status != "ok"]
        if damaged:
            listed = ", ".join(f"{check.name} ({check.status})" for check in damaged)
            raise DataError(f"the synthetic archive {archive.resolve()}/ does not match its manifest: {listed}. "
                            f"Delete {archive.resolve()}/ and generate it again with `auxcli data synth`.")
    return load_cifar100(root, download=False, dataset_cls=dataset_cls, name="synthetic")


def subset_per_class(split: Split, per_class: int) -> Split:
    """The first `per_class` images of each class (all of a smaller class), in file order; no sample loop."""
    fine = split.fine
    order = torch.argsort(fine, stable=True)  # by class, file order within a class
    counts = torch.bincount(fine)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(fine)
    rank[order] = torch.arange(len(fine)) - starts[fine[order]]  # position within its class
    keep = torch.nonzero(rank < per_class).squeeze(1)
    return Split(
        images=split.images[keep],
        fine=fine[keep],
        coarse=None if split.coarse is None else split.coarse[keep],
        index=split.index[keep],
        full_size=split.full_size,
    )

