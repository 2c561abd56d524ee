"""CIFAR-100 (with its superclasses) and CIFAR-10, read by torchvision's dataset code.

torchvision's `CIFAR100`/`CIFAR10` download the official python archive, check every file against
fixed md5 sums and read the pickles (https://www.cs.toronto.edu/~kriz/cifar.html describes the
format). torchvision keeps only the fine labels, so the coarse (superclass) labels are read from the
same `train`/`test` pickles and the class and superclass names from `meta`. Any failure a user can
fix (no files and no network, damaged files) becomes a `DataError` that says where the files go.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.datasets.utils import check_integrity

from auxcli.data.types import ImageData, Split
from auxcli.errors import DataError

_LABELS = {"cifar100": "CIFAR-100", "cifar10": "CIFAR-10", "synthetic": "The synthetic CIFAR-100 archive"}
# What unpickling a damaged file that still passes the md5 check (a hand-made manifest) can raise.
_UNPICKLING_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError,
                      AttributeError, ImportError)


def load_cifar100(root: Path, *, download: bool, dataset_cls: type[CIFAR100] = CIFAR100,
                  name: str = "cifar100") -> ImageData:
    """Both splits of the CIFAR-100 archive in `root/cifar-100-python/`, with coarse labels and names.

    `download` fetches and checks the official archive when the files are missing or damaged.
    `dataset_cls` swaps in another md5 table for the same format (generated archives: see
    `synthetic.archive_class`); `name` becomes `ImageData.name`.
    """
    root = Path(root)
    train_images, train_fine = _read_split(dataset_cls, root, train=True, download=download, name=name)
    test_images, test_fine = _read_split(dataset_cls, root, train=False, download=False, name=name)
    folder = root / dataset_cls.base_folder
    meta = _read_pickle(folder / dataset_cls.meta["filename"])
    train_coarse = _coarse_labels(folder / dataset_cls.train_list[0][0], len(train_fine))
    test_coarse = _coarse_labels(folder / dataset_cls.test_list[0][0], len(test_fine))
    try:
        classes, superclasses = list(meta["fine_label_names"]), list(meta["coarse_label_names"])
    except (KeyError, TypeError):
        raise _damaged(dataset_cls, root, name, "meta has no fine_label_names/coarse_label_names") from None
    return ImageData(
        name=name,
        train=_whole_split(train_images, train_fine, train_coarse),
        test=_whole_split(test_images, test_fine, test_coarse),
        classes=classes,
        superclasses=superclasses,
    )


def load_cifar10(root: Path, *, download: bool) -> ImageData:
    """Both splits of CIFAR-10 from `root/cifar-10-batches-py/`; it has no superclasses (`coarse` is None)."""
    root = Path(root)
    train_images, train_fine = _read_split(CIFAR10, root, train=True, download=download, name="cifar10")
    test_images, test_fine = _read_split(CIFAR10, root, train=False, download=False, name="cifar10")
    meta = _read_pickle(root / CIFAR10.base_folder / CIFAR10.meta["filename"])
    return ImageData(
        name="cifar10",
        train=_whole_split(train_images, train_fine, None),
        test=_whole_split(test_images, test_fine, None),
        classes=list(meta[CIFAR10.meta["key"]]),
        superclasses=None,
    )


def expected_md5s(dataset_cls: type[CIFAR10]) -> dict[str, str]:
    """File name -> md5 that torchvision's integrity check expects (data batches and meta)."""
    md5s = {file: md5 for file, md5 in dataset_cls.train_list + dataset_cls.test_list}
    md5s[dataset_cls.meta["filename"]] = dataset_cls.meta["md5"]
    return md5s


def _read_split(dataset_cls: type[CIFAR10], root: Path, *, train: bool, download: bool,
                name: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        dataset = dataset_cls(str(root), train=train, download=download)
    except OSError as exc:  # urllib's URLError (no network), HTTP errors, unreadable files
        raise _unavailable(dataset_cls, root, name, download_error=exc if download else None) from None
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        raise _unavailable(dataset_cls, root, name) from None
    except _UNPICKLING_ERRORS as exc:
        raise _damaged(dataset_cls, root, name, f"cannot be unpickled ({exc})") from None
    # torchvision holds (N, 32, 32, 3) as a view of the file's (N, 3, 32, 32): permuting back copies nothing
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.as_tensor(dataset.targets, dtype=torch.int64)


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")  # the official pickles were written by Python 2
    except OSError as exc:
        raise DataError(f"cannot read {path.resolve()}: {exc}.") from None
    except _UNPICKLING_ERRORS as exc:
        raise DataError(f"{path.resolve()} is not a readable CIFAR pickle ({exc}); delete "
                        f"{path.parent.resolve()} and fetch it again.") from None


def _coarse_labels(path: Path, count: int) -> torch.Tensor:
    entry = _read_pickle(path)
    coarse = entry.get("coarse_labels") if isinstance(entry, dict) else None
    if coarse is None or len(coarse) != count:
        raise DataError(f"{path.resolve()} has no coarse_labels for its {count} images; it is not a CIFAR-100 "
                        f"{'training' if path.name == 'train' else 'test'} file. Delete {path.parent.resolve()} "
                        "and fetch it again.")
    return torch.as_tensor(coarse, dtype=torch.int64)


def _whole_split(images: torch.Tensor, fine: torch.Tensor, coarse: torch.Tensor | None) -> Split:
    n = len(fine)
    return Split(images=images, fine=fine, coarse=coarse, index=torch.arange(n), full_size=n)


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
