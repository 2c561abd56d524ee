"""`prepare_data`: make every archive a set of specs reads present and verified, before any run starts.

This is the DVC pipeline's `data` stage (`auxcli data prepare SPEC_OR_DIR`): its output is the data folder,
so `dvc.lock` pins the data's md5 and `dvc push`/`pull` move it. CIFAR-100 and CIFAR-10 are downloaded
from the official release when a file is missing or fails its md5 (torchvision's tables), and the
downloaded tarball is removed once extracted (DVC would otherwise cache both); a generated archive is
written, or an existing one checked against its manifest; an image folder's layout is checked and its
tensor cache built. Idempotent: intact archives are left alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from auxcli.data.identity import DataIdentity, archive_folder, data_identity
from auxcli.errors import DataError
from auxcli.spec import DataSpec


@dataclass(frozen=True)
class Prepared:
    spec: DataSpec
    action: str  # present | downloaded | generated
    identity: DataIdentity


def distinct_data(specs: Iterable[DataSpec]) -> list[DataSpec]:
    """One `data:` section per archive (specs differing only in subset or label seed share one)."""
    seen: dict[Path, DataSpec] = {}
    for spec in specs:
        seen.setdefault(archive_folder(spec), spec)
    return list(seen.values())


def prepare_data(specs: Iterable[DataSpec]) -> list[Prepared]:
    """Download/verify or generate each distinct archive; raises `DataError` naming the first that fails."""
    return [_prepare(spec) for spec in distinct_data(specs)]


def _prepare(spec: DataSpec) -> Prepared:
    from auxcli.data.synthetic import synthesize_cifar100

    folder = archive_folder(spec)
    if spec.dataset == "folder":  # the user's images: check the layout and decode them into the cache once
        from auxcli.data.folder import load_folder
        from auxcli.project import anchored

        load_folder(folder, image_size=spec.image_size,
                    superclasses=anchored(spec.superclasses) if spec.superclasses else None)
        return Prepared(spec, "present", data_identity(spec))
    if spec.dataset == "synthetic":
        existed = folder.exists()
        s = spec.synthetic
        synthesize_cifar100(folder.parent, train_per_class=s.train_per_class, test_per_class=s.test_per_class,
                            seed=s.seed)  # checks an existing archive against its manifest and parameters
        return Prepared(spec, "present" if existed else "generated", data_identity(spec))
    action = "present"
    if damaged := _damaged_files(spec):  # md5s the whole archive: once
        if not spec.download:
            raise DataError(f"{_label(spec)} is incomplete in {folder}/ ({', '.join(damaged)}) and "
                            "data.download is false. Set data.download: true, or put the official archive's "
                            f"files there (`auxcli data verify --root {folder.parent}` lists them).")
        _download(spec, folder.parent)
        action = "downloaded"
        bad = _damaged_files(spec)
        if bad:
            raise DataError(f"{_label(spec)} in {folder}/ still fails its md5 check after downloading "
                            f"({', '.join(bad)}). Delete {folder}/ and run `auxcli data prepare` again.")
    return Prepared(spec, action, data_identity(spec))


def _damaged_files(spec: DataSpec) -> list[str]:
    from auxcli.data.identity import expected_files
    from auxcli.data.verify import check_files

    checks = check_files(archive_folder(spec), expected_files(spec))
    return [f"{c.name}: {c.status}" for c in checks if c.status != "ok"]


def _download(spec: DataSpec, root: Path) -> None:
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    cls = CIFAR10 if spec.dataset == "cifar10" else CIFAR100
    try:
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5,
                                     remove_finished=True)
    except (OSError, RuntimeError) as exc:  # no network, HTTP errors, a tarball that fails its md5
        raise DataError(f"downloading {_label(spec)} from {cls.url} into {root}/ failed ({exc}). Fetch it (md5 "
                        f"{cls.tgz_md5}) on a machine with network access and extract it in {root}/, or "
                        "`dvc pull` the data folder from the project's DVC remote.") from None


def _label(spec: DataSpec) -> str:
    return {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}.get(spec.dataset, spec.dataset)


def format_prepared(prepared: list[Prepared], root: Path | None = None) -> str:
    """One line per archive: action, folder, digest and the DVC md5 when DVC already tracks it."""
    lines = []
    for p in prepared:
        folder = p.identity.folder
        shown = folder.relative_to(root) if root is not None and folder.is_relative_to(root) else folder
        dvc = f", dvc {p.identity.dvc_md5}" if p.identity.dvc_md5 else ""
        lines.append(f"{p.action:10} {shown}/ ({p.identity.name}, {len(p.identity.files)} files, "
                     f"digest {p.identity.short_digest}{dvc})")
    return "\n".join(lines)
