"""Reading CIFAR python archives without trusting them: a restricted unpickler and content checks.

The CIFAR python release is a set of pickles (https://www.cs.toronto.edu/~kriz/cifar.html). A pickle
can name any Python callable, so an archive from a shared drive, a DVC remote or a tarball that
matches its own `manifest.json` could run code when loaded (issue 9). Every archive file is therefore
read by `SafeUnpickler`, which builds only plain containers, numbers, strings and numpy arrays: the
same globals that `torch.load(weights_only=True)` admits for numpy data (`numpy.core.multiarray._reconstruct`,
`numpy.ndarray`, `numpy.dtype`, `_codecs.encode`) and nothing else.

`read_archive` then checks what the files hold, split by split: a uint8 (N, 3072) `data` array, N
labels per label key, labels inside the class range, no empty split, the full list of class names.
`auxcli data verify` prints these problems; `auxcli run` refuses the data with the same text.
"""

from __future__ import annotations

import codecs
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from auxcli.errors import DataError

IMAGE_VALUES = 3 * 32 * 32
MAX_FILE_BYTES = 1 << 30  # the largest official file (CIFAR-100 train) is 155 MB

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
    ("numpy._core.multiarray", "_reconstruct"): np.ndarray.__reduce__(np.zeros(0))[0],
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,  # how protocol-2 pickles written by Python 3 spell bytes
}


class UnsafePickle(DataError):
    """A pickle that asks for a callable outside the allowlist."""


class SafeUnpickler(pickle.Unpickler):
    """Builds dicts, lists, tuples, str, bytes, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR file never needs "
                                         "(arrays, lists, numbers and strings only)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it uses persistent ids, which a CIFAR file never does")


def safe_load_pickle(path: Path) -> Any:
    """Unpickle `path` with `SafeUnpickler` (latin1 strings, as the Python 2 release needs).

    Raises `DataError` naming the file for unreadable, truncated or disallowed content.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise DataError(f"{path.resolve()} is larger than any CIFAR file ({path.stat().st_size:,} bytes).")
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path.resolve()}: {exc.strerror or exc}.") from None
    try:
        return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise UnsafePickle(f"{path.resolve()} was not loaded: {exc}. Delete its folder and fetch or generate "
                           "the data again.") from None
    except Exception as exc:  # truncated or garbled pickles raise EOFError, ValueError, TypeError, ...
        raise DataError(f"{path.resolve()} is not a readable CIFAR pickle ({type(exc).__name__}: {exc}); delete "
                        f"{path.parent.resolve()} and fetch or generate it again.") from None


@dataclass(frozen=True)
class Layout:
    """Where a CIFAR python archive keeps what (torchvision's CIFAR10/CIFAR100 class attributes)."""

    name: str  # CIFAR-100 | CIFAR-10
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str  # fine_labels | labels
    names_key: str  # fine_label_names | label_names
    classes: int
    coarse_key: str | None = None
    coarse_names_key: str | None = None
    superclasses: int = 0


CIFAR100_LAYOUT = Layout("CIFAR-100", ("train",), ("test",), "meta", "fine_labels", "fine_label_names", 100,
                         "coarse_labels", "coarse_label_names", 20)
CIFAR10_LAYOUT = Layout("CIFAR-10", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                        "batches.meta", "labels", "label_names", 10)


@dataclass(frozen=True)
class RawSplit:
    images: np.ndarray  # uint8 (N, 3, 32, 32)
    fine: np.ndarray  # int64 (N,)
    coarse: np.ndarray | None  # int64 (N,)


@dataclass(frozen=True)
class RawArchive:
    train: RawSplit
    test: RawSplit
    classes: list[str]
    superclasses: list[str] | None


def read_archive(folder: Path, layout: Layout) -> tuple[RawArchive | None, list[str]]:
    """Both splits and the names of the archive in `folder`, or None and the list of what is wrong.

    Unreadable or unsafe files raise `DataError`; wrong contents are returned as problems, each naming
    the file and the key at fault.
    """
    folder = Path(folder)
    problems: list[str] = []
    meta = safe_load_pickle(folder / layout.meta_file)
    classes = _names(meta, layout.names_key, layout.classes, layout.meta_file, problems)
    superclasses = (_names(meta, layout.coarse_names_key, layout.superclasses, layout.meta_file, problems)
                    if layout.coarse_names_key else None)
    splits = {}
    for split, files in (("train", layout.train_files), ("test", layout.test_files)):
        parts = [_batch(folder / file, layout, problems) for file in files]
        if any(p is None for p in parts):
            continue
        images = np.concatenate([p.images for p in parts]) if parts else np.zeros((0, 3, 32, 32), np.uint8)
        if len(images) == 0:
            problems.append(f"the {split} split ({', '.join(files)}) holds no images")
            continue
        coarse = None if layout.coarse_key is None else np.concatenate([p.coarse for p in parts])
        splits[split] = RawSplit(images, np.concatenate([p.fine for p in parts]), coarse)
    if problems:
        return None, problems
    return RawArchive(splits["train"], splits["test"], classes, superclasses), []


def problems_message(folder: Path, layout: Layout, problems: list[str]) -> str:
    """The paragraph `auxcli data verify` and `auxcli run` print for wrong contents."""
    return (f"{layout.name} in {Path(folder).resolve()}/ has wrong contents: {'; '.join(problems)}. The files "
            "passed their checksum, so they were written this way: delete the folder and fetch or generate "
            "the data again.")


def _names(meta: Any, key: str | None, count: int, file: str, problems: list[str]) -> list[str]:
    names = meta.get(key) if isinstance(meta, dict) else None
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        problems.append(f"{file}: {key} is missing or not a list of strings")
        return []
    if len(names) != count:
        problems.append(f"{file}: {key} has {len(names)} names; the format has {count}")
    return list(names)


def _batch(path: Path, layout: Layout, problems: list[str]) -> RawSplit | None:
    entry = safe_load_pickle(path)
    name = path.name
    if not isinstance(entry, dict):
        problems.append(f"{name}: holds a {type(entry).__name__}, not a mapping with data and labels")
        return None
    data = entry.get("data")
    if not isinstance(data, np.ndarray):
        problems.append(f"{name}: data is missing or not an array")
        return None
    if data.dtype != np.uint8:
        problems.append(f"{name}: data has dtype {data.dtype}; allowed: uint8")
        return None
    if data.ndim != 2 or data.shape[1] != IMAGE_VALUES:
        problems.append(f"{name}: data has shape {data.shape}; allowed: (N, {IMAGE_VALUES}), one 3x32x32 image per row")
        return None
    n = data.shape[0]
    fine = _labels(entry, layout.label_key, n, layout.classes, name, problems)
    coarse = (_labels(entry, layout.coarse_key, n, layout.superclasses, name, problems)
              if layout.coarse_key else np.zeros(0, np.int64))
    if fine is None or coarse is None:
        return None
    return RawSplit(data.reshape(n, 3, 32, 32), fine, coarse if layout.coarse_key else None)


def _labels(entry: dict, key: str, n: int, classes: int, name: str, problems: list[str]) -> np.ndarray | None:
    raw = entry.get(key)
    if not isinstance(raw, list | tuple | np.ndarray):
        problems.append(f"{name}: {key} is missing or not a list")
        return None
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in raw):
        problems.append(f"{name}: {key} holds values that are not integers")
        return None
    if len(raw) != n:
        problems.append(f"{name}: {key} has {len(raw)} labels for {n} images")
        return None
    try:
        labels = np.asarray(raw, dtype=np.int64) if len(raw) else np.zeros(0, np.int64)
    except OverflowError:
        problems.append(f"{name}: {key} has labels outside 0..{classes - 1} (beyond 64-bit integers)")
        return None
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if len(bad):
        problems.append(f"{name}: {key} has {len(bad)} label(s) outside 0..{classes - 1} "
                        f"(e.g. {labels[bad[0]]} at index {bad[0]})")
        return None
    return labels
