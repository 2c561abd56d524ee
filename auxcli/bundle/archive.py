"""The bundle file: a byte-reproducible tar.gz with a manifest, verified before anything is extracted.

Layout: `manifest.json` first, then every other member in name order. The manifest lists each member
with its sha256 and size; the bundle id is the sha256 of the manifest's canonical JSON (sorted keys, no
spaces) without the `bundle_id` field itself. Built twice from the same inputs the file is the same
bytes: fixed member order, mtime 0, uid/gid 0, empty user and group names, mode 0644, no directory
entries, and a gzip header with mtime 0 and no file name.

Reading refuses, naming the member: a first member that is not the manifest, an absolute path, a `..`
or empty path component, anything but a regular file (links, devices, directories), a member the
manifest does not list, a duplicate, a size other than the manifest's or above `MAX_MEMBER_BYTES`, a
sha256 that differs, and a listed member that is absent. What the manifest itself says (run names, seeds,
paths, sizes against `trust.Limits`) and whether the bundled specs agree with it is checked by `trust.py`.
Extraction then uses tarfile's `data` filter (PEP 706) on the verified members reproducing needs only and
checks every extracted file's sha256 once more.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from auxcli.bundle import trust
from auxcli.bundle.trust import Limits
from auxcli.errors import BundleError
from auxcli.runfolder import atomic_write_bytes

BUNDLE_FORMAT = "auxcli-bundle/1"
MANIFEST = "manifest.json"
MAX_MEMBER_BYTES = 16 << 30  # 16 GiB: far above any checkpoint here, far below a decompression bomb's aim
MAX_MANIFEST_BYTES = 64 << 20
_CHUNK = 1 << 20

Content = bytes | Path  # a member's bytes, or a file to copy (checkpoints are not read into memory)


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def bundle_id(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON without its `bundle_id` field."""
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != "bundle_id"})).hexdigest()


def make_manifest(members: dict[str, Content], runs: list[dict[str, Any]]) -> dict[str, Any]:
    listed = {name: {"sha256": _sha256(content), "size": _size(content)} for name, content in sorted(members.items())}
    manifest: dict[str, Any] = {"format": BUNDLE_FORMAT, "members": listed, "runs": runs}
    manifest["bundle_id"] = bundle_id(manifest)
    return manifest


def write_bundle(out: Path, members: dict[str, Content], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Write the archive atomically; returns its manifest (with `bundle_id`)."""
    for name in members:
        check_name(name)
        if name == MANIFEST:
            raise BundleError(f"{MANIFEST} is reserved for the bundle's manifest")
    manifest = make_manifest(members, runs)
    manifest_bytes = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")

    def write(f) -> None:
        with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=6) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST, manifest_bytes)
            for name in sorted(members):
                _add(tar, name, members[name])

    atomic_write_bytes(Path(out), write)
    return manifest


def _add(tar: tarfile.TarFile, name: str, content: Content) -> None:
    info = tarfile.TarInfo(name)
    info.size = _size(content)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    if isinstance(content, bytes):
        tar.addfile(info, io.BytesIO(content))
    else:
        with content.open("rb") as f:
            tar.addfile(info, f)


# ---------------------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class VerifiedBundle:
    path: Path
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return self.manifest["bundle_id"]

    @property
    def runs(self) -> list[dict[str, Any]]:
        return self.manifest["runs"]


def check_name(name: str) -> None:
    """Refuse member names that could leave the extraction folder or are ambiguous."""
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise BundleError(f"bundle member {name!r}: absolute path refused")
    if "\\" in name or any(part in ("", "..", ".") for part in name.split("/")) or not path.parts:
        raise BundleError(f"bundle member {name!r}: a '..', '.' or empty path component is refused")


def _check_member(info: tarfile.TarInfo, where: Path) -> None:
    check_name(info.name)
    if not info.isreg():
        kind = ("symbolic link" if info.issym() else "hard link" if info.islnk() else
                "directory" if info.isdir() else "device" if info.isdev() else "special file")
        raise BundleError(f"{where}: bundle member {info.name!r} is a {kind}; only regular files are allowed")
    if info.size > MAX_MEMBER_BYTES:
        raise BundleError(f"{where}: bundle member {info.name!r} is {info.size} bytes, "
                          f"over the limit of {MAX_MEMBER_BYTES}")


def _members(path: Path, mode: str = "r|gz") -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    last = "the start"
    try:
        with tarfile.open(path, mode=mode) as tar:
            for info in tar:
                yield tar, info
                last = f"member {info.name!r}"
    except BundleError:
        raise
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle file") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{path}: not a readable .tar.gz bundle after {last} ({type(exc).__name__}: "
                          f"{str(exc)[:200]}); it is damaged or not made by `auxcli bundle`") from None


def verify_bundle(path: Path, limits: Limits | None = None) -> VerifiedBundle:
    """Check every member against the manifest and the manifest against `trust.py` (see the module
    docstring); raise `BundleError` naming the first member or field that fails."""
    path = Path(path)
    _check_regular(path)
    manifest: dict[str, Any] | None = None
    seen: set[str] = set()
    contents: dict[str, bytes] = {}  # the small members `trust.check_agreement` reads
    wanted: set[str] = set()
    for tar, info in _members(path):
        _check_member(info, path)
        if manifest is None:
            if info.name != MANIFEST:
                raise BundleError(f"{path}: the first member is {info.name!r}, not {MANIFEST}; "
                                  "not a bundle made by `auxcli bundle`")
            manifest = _read_manifest(path, tar, info)
            trust.check_manifest(path, manifest, limits or trust.Limits(), _file_size(path))
            wanted = trust.agreement_members(manifest)
            continue
        if info.name in seen or info.name == MANIFEST:
            raise BundleError(f"{path}: bundle member {info.name!r} appears twice")
        seen.add(info.name)
        expected = manifest["members"].get(info.name)
        if expected is None:
            raise BundleError(f"{path}: bundle member {info.name!r} is not in the manifest (an added file)")
        if info.size != expected["size"]:
            raise BundleError(f"{path}: bundle member {info.name!r} is {info.size} bytes; the manifest says "
                              f"{expected['size']}")
        if info.name in wanted and info.size <= trust.AGREEMENT_MAX_BYTES:
            data = tar.extractfile(info).read()
            contents[info.name] = data
            digest = hashlib.sha256(data).hexdigest()
        else:
            digest = _stream_sha256(tar.extractfile(info))
        if digest != expected["sha256"]:
            raise BundleError(f"{path}: bundle member {info.name!r} was changed: its sha256 differs from "
                              "the manifest's")
    if manifest is None:
        raise BundleError(f"{path}: an empty archive, not a bundle")
    missing = sorted(set(manifest["members"]) - seen)
    if missing:
        raise BundleError(f"{path}: bundle member {missing[0]!r} is listed in the manifest but missing"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    trust.check_agreement(path, manifest, contents)
    return VerifiedBundle(path, manifest)


def _check_regular(path: Path) -> None:
    """A bundle is a regular file: opening a FIFO would wait for a writer forever, a device never ends."""
    import os
    import stat

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BundleError(f"{path}: no such bundle file") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the bundle ({exc.strerror})") from None
    if not stat.S_ISREG(mode):
        raise BundleError(f"{path}: not a regular file (a folder, FIFO or device); a bundle is a .tar.gz file")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_manifest(path: Path, tar: tarfile.TarFile, info: tarfile.TarInfo) -> dict[str, Any]:
    if info.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: {MANIFEST} is {info.size} bytes, over {MAX_MANIFEST_BYTES}")
    try:
        manifest = json.loads(tar.extractfile(info).read())
        members = manifest["members"]
        ok = (manifest.get("format") == BUNDLE_FORMAT and isinstance(members, dict)
              and all(isinstance(m, dict) and isinstance(m.get("sha256"), str) and isinstance(m.get("size"), int)
                      for m in members.values()) and isinstance(manifest.get("runs"), list))
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise BundleError(f"{path}: {MANIFEST} is not a manifest of format {BUNDLE_FORMAT!r}")
    for name in members:
        check_name(name)
    if manifest.get("bundle_id") != bundle_id(manifest):
        raise BundleError(f"{path}: {MANIFEST} was changed: its bundle_id does not match its content")
    return manifest


def extract_bundle(bundle: VerifiedBundle, dest: Path) -> Path:
    """Extract a verified bundle's needed members (`trust.needed_members`) and its manifest into `dest` (data
    filter), re-checking each file. `dest` is replaced: callers pass a folder only this bundle uses."""
    shutil.rmtree(dest, ignore_errors=True)  # no stale files from an earlier extraction
    dest.mkdir(parents=True)
    needed = trust.needed_members(bundle.manifest)
    listed = {name: entry for name, entry in bundle.manifest["members"].items() if name in needed}
    for tar, info in _members(bundle.path):
        _check_member(info, bundle.path)
        if info.name == MANIFEST or info.name in listed:
            tar.extract(info, dest, filter="data")
    for name, expected in listed.items():
        target = dest / name
        if not target.is_file() or target.is_symlink():
            raise BundleError(f"{bundle.path}: bundle member {name!r} did not extract to a regular file")
        with target.open("rb") as f:
            if _stream_sha256(f) != expected["sha256"]:
                raise BundleError(f"{bundle.path}: bundle member {name!r} changed while extracting")
    return dest


def _stream_sha256(f) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _sha256(content: Content) -> str:
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest()
    with content.open("rb") as f:
        return _stream_sha256(f)


def _size(content: Content) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size
