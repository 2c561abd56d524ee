"""`verify_data`: check a CIFAR-100-format archive file by file and say what it holds.

Real CIFAR-100 is checked against the md5 sums torchvision ships (`CIFAR100.train_list`, `test_list`,
`meta`), which are the official release's; a generated archive (one with `manifest.json`) against its
manifest. The report lists each file as ok, mismatch or missing; when all passed, the archive is read
with the restricted unpickler of `archive.py` (a manifest can be forged together with its files, so a
matching md5 is no reason to trust a pickle) and its contents checked: shapes, dtypes, label ranges,
label and image counts, class names. `auxcli data verify` prints the images per split and the size of
each label set, and exits 2 unless every file is ok and every content check passed; `auxcli run`
refuses such data with the same text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate
from torchvision.datasets import CIFAR100

from auxcli.data.archive import CIFAR100_LAYOUT, problems_message, read_archive
from auxcli.data.cifar import expected_md5s
from auxcli.data.synthetic import ARCHIVE_FOLDER, MANIFEST, manifest_md5s, read_manifest
from auxcli.errors import DataError

DATASETS: tuple[str, ...] = ("auto", "cifar100", "synthetic")


@dataclass(frozen=True)
class FileCheck:
    name: str  # file inside the archive folder: train, test, meta
    status: str  # ok | mismatch | missing
    expected_md5: str
    actual_md5: str | None  # None when missing


@dataclass(frozen=True)
class VerifyReport:
    folder: Path  # the archive folder, .../cifar-100-python
    dataset: str  # cifar100 | synthetic
    files: tuple[FileCheck, ...]
    images: dict[str, int | None]  # split -> image count; None unless the file passed its check
    label_sets: dict[str, int]  # label set -> classes (from meta); empty unless meta passed its check
    problem: str | None = None  # a failure before any file could be checked (e.g. no manifest)
    contents: tuple[str, ...] = ()  # what is wrong inside files that passed their md5

    @property
    def ok(self) -> bool:
        return (self.problem is None and not self.contents and bool(self.files)
                and all(f.status == "ok" for f in self.files))

    def failure(self) -> str:
        """One paragraph saying what failed and how to fix it (empty when `ok`)."""
        if self.ok:
            return ""
        if self.problem is not None:
            return self.problem
        if self.contents:
            return problems_message(self.folder, CIFAR100_LAYOUT, list(self.contents))
        bad = ", ".join(f"{f.name} ({f.status})" for f in self.files if f.status != "ok")
        if all(f.status == "missing" for f in self.files):
            names = ", ".join(f.name for f in self.files)
            if self.dataset == "synthetic":
                return f"{self.folder}/ lacks all of its files ({names}); generate it with `auxcli data synth`."
            return (f"CIFAR-100 is not in {self.folder}/: {names} are missing. "
                    f"Download {CIFAR100.url} (md5 {CIFAR100.tgz_md5}) "
                    f"and extract it in {self.folder.parent}/ so that {self.folder}/ appears, or let a run with "
                    "data.download: true fetch it.")
        if self.dataset == "synthetic":
            fix = f"delete {self.folder}/ and generate it again with `auxcli data synth`."
            against = "its manifest"
        else:
            fix = (f"delete {self.folder}/ and download {CIFAR100.url} again (or set data.download: true); "
                   "a generated archive is checked with --dataset synthetic.")
            against = "the official CIFAR-100 md5 sums"
        return f"{self.folder}/ failed the check against {against}: {bad}. To fix it, {fix}"


def verify_data(root: Path, dataset: str = "auto") -> VerifyReport:
    """Check the archive in `root/cifar-100-python/` (or `root` itself if it is that folder).

    `dataset`: cifar100 (torchvision's md5s), synthetic (the manifest's) or auto (synthetic when a
    manifest is there). Never raises for bad files, only for an unknown `dataset`.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown --dataset {dataset!r}; allowed: {', '.join(DATASETS)}.")
    root = Path(root).resolve()
    folder = root if root.name == ARCHIVE_FOLDER and not (root / ARCHIVE_FOLDER).exists() else root / ARCHIVE_FOLDER
    if dataset == "auto":
        dataset = "synthetic" if (folder / MANIFEST).is_file() else "cifar100"
    if dataset == "synthetic":
        try:
            expected = manifest_md5s(read_manifest(folder))
        except DataError as exc:
            return VerifyReport(folder, dataset, (), {}, {}, problem=str(exc))
        except (KeyError, TypeError, AttributeError):
            return VerifyReport(folder, dataset, (), {}, {},
                                problem=f"{folder / MANIFEST} has no md5 per file; generate the archive again.")
    else:
        expected = expected_md5s(CIFAR100)
    files = tuple(check_files(folder, expected))
    if not files or any(f.status != "ok" for f in files):
        return VerifyReport(folder, dataset, files, {"train": None, "test": None}, {})
    try:
        archive, problems = read_archive(folder, CIFAR100_LAYOUT)
    except DataError as exc:  # unreadable, truncated, or a pickle that asks for code
        return VerifyReport(folder, dataset, files, {"train": None, "test": None}, {}, problem=str(exc))
    if archive is None:
        return VerifyReport(folder, dataset, files, {"train": None, "test": None}, {}, contents=tuple(problems))
    return VerifyReport(
        folder=folder,
        dataset=dataset,
        files=files,
        images={"train": len(archive.train.fine), "test": len(archive.test.fine)},
        label_sets={"gt": len(archive.classes), "superclass": len(archive.superclasses or []),
                    "random": len(archive.classes)},
    )


def check_files(folder: Path, expected: dict[str, str]) -> list[FileCheck]:
    """Each expected file of `folder` against its md5: ok, mismatch or missing."""
    checks = []
    for name, md5 in expected.items():
        path = Path(folder) / name
        if not path.is_file():
            checks.append(FileCheck(name, "missing", md5, None))
            continue
        actual = file_md5(path)
        checks.append(FileCheck(name, "ok" if actual == md5 else "mismatch", md5, actual))
    return checks


def file_md5(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """md5 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def format_report(report: VerifyReport) -> str:
    """The report as plain-text tables: files, images per split, label-set sizes."""
    lines = [f"{report.dataset} archive: {report.folder}/"]
    if report.files:
        rows = [(f.name, f.status, f.expected_md5, f.actual_md5 or "-") for f in report.files]
        lines += ["", tabulate(rows, headers=["file", "status", "expected md5", "actual md5"])]
    if any(count is not None for count in report.images.values()):
        rows = [(split, "?" if count is None else count) for split, count in report.images.items()]
        lines += ["", tabulate(rows, headers=["split", "images"])]
    if report.label_sets:
        lines += ["", tabulate(list(report.label_sets.items()), headers=["label set", "classes"])]
    if report.contents:
        lines += ["", "wrong contents:"] + [f"  {problem}" for problem in report.contents]
    lines += ["", "ok" if report.ok else "FAILED"]
    return "\n".join(lines)
