"""`data_identity`: which data a run trained on, as a digest MLflow can record and the md5 DVC pinned.

The digest is a sha256 over the archive's file names and md5s (plus `subset`, which changes the training
split), so two runs share a digest exactly when they read the same bytes. The md5s are the ones the
loader checks every file against before reading it (torchvision's table for CIFAR-10/100, the manifest
for a generated archive), so after `load_data` succeeded they are the files' md5s and nothing has to be
hashed again. When the archive lies inside a DVC-tracked folder (an output in `dvc.lock`, or a `.dvc`
file), that folder's DVC md5 is reported too: the one `dvc push`/`pull` and `dvc.lock` use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from auxcli.project import anchored, workspace_root
from auxcli.spec import DataSpec


@dataclass(frozen=True)
class DataIdentity:
    name: str  # cifar100 | cifar10 | folder | synthetic-s<seed>-<train>x<test>, with "-subset<N>" when subset is set
    folder: Path  # the archive folder (.../cifar-100-python or .../cifar-10-batches-py; an image folder's root)
    digest: str  # sha256 hex of the file names, their md5s and the subset
    files: dict[str, str] = field(default_factory=dict)  # file in the archive folder -> md5
    dvc_path: str | None = None  # the DVC-tracked folder holding the archive, relative to the repository
    dvc_md5: str | None = None  # its md5 in dvc.lock / the .dvc file (e.g. "3f2a....dir")

    @property
    def short_digest(self) -> str:
        """The first 12 hex digits, the length MLflow shows for dataset digests."""
        return self.digest[:12]


def archive_folder(spec: DataSpec) -> Path:
    """Where the spec's archive lives (`data.root` anchored at the repository root)."""
    from torchvision.datasets import CIFAR10

    from auxcli.data.synthetic import ARCHIVE_FOLDER, synthetic_folder

    root = anchored(spec.root)
    if spec.dataset == "folder":
        return root  # train/<class>/ and test/<class>/ (auxcli/data/folder.py)
    if spec.dataset == "cifar10":
        return root / CIFAR10.base_folder
    if spec.dataset == "synthetic":
        s = spec.synthetic
        return synthetic_folder(root, train_per_class=s.train_per_class, test_per_class=s.test_per_class,
                                seed=s.seed) / ARCHIVE_FOLDER
    return root / ARCHIVE_FOLDER


def expected_files(spec: DataSpec) -> dict[str, str]:
    """File -> md5 that loading checks: torchvision's tables, or the generated archive's manifest."""
    from auxcli.data.cifar import CIFAR10, CIFAR100, expected_md5s
    from auxcli.data.synthetic import MANIFEST, manifest_md5s, read_manifest

    if spec.dataset == "synthetic":
        folder = archive_folder(spec)
        return manifest_md5s(read_manifest(folder)) | {MANIFEST: _md5(folder / MANIFEST)}
    if spec.dataset == "folder":  # the images' sha256 (what the folder cache is checked against), and the mapping
        from auxcli.data.folder import source_hashes

        mapping = {} if spec.superclasses is None else {
            f"superclasses:{spec.superclasses}": _md5(anchored(spec.superclasses))}
        return source_hashes(archive_folder(spec)) | mapping
    return expected_md5s(CIFAR10 if spec.dataset == "cifar10" else CIFAR100)


def data_identity(spec: DataSpec) -> DataIdentity:
    """The identity of the data `spec` names; call it after `load_data(spec)` (or `prepare_data`) succeeded.

    Raises `DataError` when a generated archive has no readable manifest.
    """
    folder = archive_folder(spec)
    files = dict(sorted(expected_files(spec).items()))
    lines = [f"{name} {md5}" for name, md5 in files.items()] + [f"subset {spec.subset}"]
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    name = folder.parent.name if spec.dataset == "synthetic" else spec.dataset
    if spec.subset is not None:
        name += f"-subset{spec.subset}"
    dvc_path, dvc_md5 = dvc_tracked(folder)
    return DataIdentity(name, folder, digest, files, dvc_path, dvc_md5)


def dvc_tracked(path: Path) -> tuple[str | None, str | None]:
    """(tracked folder relative to the repository, its md5) for the DVC output or `.dvc` file that holds
    `path`, read from the `dvc.lock` and `.dvc` files between `path` and the repository root; (None, None)
    when DVC tracks no folder above it."""
    path = Path(path).resolve()
    root = workspace_root(path)
    if root is None:
        return None, None
    candidates: list[tuple[Path, dict]] = []  # (out path, out entry)
    chain = [path, *path.parents[:len(path.parents) - len(root.parents)]]  # path up to the repository root
    for folder in chain:  # pipelines in the folders above the data, and `<folder>.dvc` files of `dvc add`
        lock = folder / "dvc.lock"
        stages = (_load(lock).get("stages") or {}) if lock.is_file() else {}
        for stage in stages.values() if isinstance(stages, dict) else []:
            for out in (stage.get("outs") or []) if isinstance(stage, dict) else []:
                if isinstance(out, dict) and isinstance(out.get("path"), str):
                    candidates.append(((lock.parent / out["path"]).resolve(), out))
        dvcfile = folder.with_name(folder.name + ".dvc")
        if folder != root and dvcfile.is_file():
            outs = _load(dvcfile).get("outs") or []
            for out in outs if isinstance(outs, list) else []:
                if isinstance(out, dict) and isinstance(out.get("path"), str):
                    candidates.append(((dvcfile.parent / out["path"]).resolve(), out))
    for out_path, out in sorted(candidates, key=lambda c: len(c[0].parts), reverse=True):
        if (out_path == path or out_path in path.parents) and out.get("md5"):
            return out_path.relative_to(root).as_posix(), str(out["md5"])
    return None, None


def _load(file: Path) -> dict:
    """A `dvc.lock` or `.dvc` file through `safeyaml` (bounded: no alias bombs, no FIFOs); a damaged one is
    named in a warning and identifies nothing."""
    import logging

    from auxcli.errors import SpecError
    from auxcli.safeyaml import read_yaml_file

    try:
        doc = read_yaml_file(file, "DVC file", "a DVC lock or .dvc file (YAML mapping)")
    except SpecError as exc:
        logging.getLogger(__name__).warning("skipped a damaged DVC file when looking for the data's md5: %s", exc)
        return {}
    return doc if isinstance(doc, dict) else {}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()
