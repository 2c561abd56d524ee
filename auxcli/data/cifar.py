"""CIFAR-100 (with its superclasses) and CIFAR-10: torchvision's md5 tables and download, our safe reader.

torchvision's `CIFAR100`/`CIFAR10` classes hold the official archive's URL and the md5 of every file
(https://www.cs.toronto.edu/~kriz/cifar.html describes the format); they are used here for those
tables and the download only. The files themselves are read by `archive.read_archive`, whose
restricted unpickler cannot run code and whose checks refuse wrong contents behind a valid checksum
(issue 9). Any failure a user can fix (no files and no network, damaged files, wrong contents) becomes
a `DataError` that says where the files go.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity

from auxcli.data.archive import CIFAR10_LAYOUT, CIFAR100_LAYOUT, Layout, RawSplit, problems_message, read_archive
from auxcli.data.types import ImageData, Split
from auxcli.errors import DataError

_LABELS = {"cifar100": "CIFAR-100", "cifar10": "CIFAR-10", "synthetic": "The synthetic CIFAR-100 archive"}


def load_cifar100(root: Path, *, download: bool, dataset_cls: type[CIFAR100] = CIFAR100,
                  name: str = "cifar100") -> ImageData:
    """Both splits of the CIFAR-100 archive in `root/cifar-100-python/`, with coarse labels and names.

    `download` fetches and checks the official archive when the files are missing or damaged.
    `dataset_cls` swaps in another md5 table for the same format (generated archives: see
    `synthetic.archive_class`); `name` becomes `ImageData.name`.
    """
    return _load(Path(root), dataset_cls, CIFAR100_LAYOUT, download=download, name=name)


def load_cifar10(root: Path, *, download: bool) -> ImageData:
    """Both splits of CIFAR-10 from `root/cifar-10-batches-py/`; it has no superclasses (`coarse` is None)."""
    return _load(Path(root), CIFAR10, CIFAR10_LAYOUT, download=download, name="cifar10")


def expected_md5s(dataset_cls: type[CIFAR10]) -> dict[str, str]:
    """File name -> md5 that torchvision's integrity check expects (data batches and meta)."""
    md5s = {file: md5 for file, md5 in dataset_cls.train_list + dataset_cls.test_list}
    md5s[dataset_cls.meta["filename"]] = dataset_cls.meta["md5"]
    return md5s


def _load(root: Path, dataset_cls: type[CIFAR10], layout: Layout, *, download: bool, name: str) -> ImageData:
    _ensure_files(dataset_cls, root, download=download, name=name)
    folder = root / dataset_cls.base_folder
    archive, problems = read_archive(folder, layout)
    if archive is None:
        raise DataError(problems_message(folder, layout, problems))
    return ImageData(
        name=name,
        train=_whole_split(archive.train),
        test=_whole_split(archive.test),
        classes=archive.classes,
        superclasses=archive.superclasses,
    )


def _intact(dataset_cls: type[CIFAR10], root: Path) -> bool:
    folder = root / dataset_cls.base_folder
    return all(check_integrity(str(folder / file), md5) for file, md5 in expected_md5s(dataset_cls).items())


def _ensure_files(dataset_cls: type[CIFAR10], root: Path, *, download: bool, name: str) -> None:
    """Every file present with its pinned md5, downloading the official archive first if asked."""
    if _intact(dataset_cls, root):
        return
    if download and dataset_cls.url is not None:
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(dataset_cls.url, str(root), filename=dataset_cls.filename,
                                         md5=dataset_cls.tgz_md5)
        # OSError: urllib's URLError (no network), HTTP errors, unwritable folders; RuntimeError: torchvision's
        # "the downloaded archive fails its md5"
        except (OSError, RuntimeError) as exc:
            raise _unavailable(dataset_cls, root, name, download_error=exc) from None
        if _intact(dataset_cls, root):
            return
    raise _unavailable(dataset_cls, root, name)


def _whole_split(raw: RawSplit) -> Split:
    n = len(raw.fine)
    return Split(images=torch.from_numpy(raw.images), fine=torch.from_numpy(raw.fine),
                 coarse=None if raw.coarse is None else torch.from_numpy(raw.coarse), index=torch.arange(n),
                 full_size=n)


def _unavailable(dataset_cls: type[CIFAR10], root: Path, name: str,
                 download_error: Exception | None = None) -> DataError:
    """Missing (nothing there) or damaged (something there that fails its md5): say which, and the fix."""
    folder = Path(root).resolve() / dataset_cls.base_folder
    status = {
        file: "ok" if check_integrity(str(folder / file), md5) else
        "md5 mismatch" if (folder / file).is_file() else "missing"
        for file, md5 in expected_md5s(dataset_cls).items()
    }
    if any(s == "md5 mismatch" for s in status.values()):
        bad = ", ".join(f"{file} ({s})" for file, s in status.items() if s != "ok")
        note = f" Downloading a fresh copy failed too: {download_error}." if download_error else ""
        return _damaged(dataset_cls, root, name, bad, note)
    label = _LABELS.get(name, name)
    absent = ", ".join(file for file, s in status.items() if s == "missing")
    text = f"{label} was not found: {folder}/ should hold {absent}."
    if dataset_cls.url is None:
        return DataError(f"{text} Generate it with `auxcli data synth --root {folder.parent}`.")
    if download_error is not None:
        text += f" Downloading {dataset_cls.url} failed: {download_error}."
    else:
        text += " Nothing was downloaded because data.download is false."
    return DataError(
        f"{text} Fetch {dataset_cls.url} (md5 {dataset_cls.tgz_md5}) on a machine with network access and "
        f"extract it in {folder.parent}/ so that {folder}/ appears, or set data.download: true where the "
        "network is reachable (dataset: synthetic needs no download)."
    )


def _damaged(dataset_cls: type[CIFAR10], root: Path, name: str, what: str, note: str = "") -> DataError:
    folder = Path(root).resolve() / dataset_cls.base_folder
    label = _LABELS.get(name, name)
    fix = (f"generate it again with `auxcli data synth --root {folder.parent}` (or let dataset: synthetic do it)"
           if dataset_cls.url is None else f"download {dataset_cls.url} again and extract it in {folder.parent}/")
    return DataError(f"{label} in {folder}/ is damaged or not the official release: {what}.{note} "
                     f"Delete {folder}/ and {fix}; `auxcli data verify --root {folder.parent}` checks every file.")
