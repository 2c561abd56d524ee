"""What `auxcli reproduce` believes of a bundle: nothing it has not checked.

A manifest is a checksum list, not a signature: anyone can write a consistent one (issue 21). So every
field of it, and every bundled spec and metrics file, is input from a stranger, checked here before
anything is extracted or written (`--check-only` included):

- sizes: every member's declared size is a non-negative integer and its sha256 64 hex digits; the total
  is at most `Limits.max_bytes` and, above `RATIO_FLOOR_BYTES`, at most `Limits.max_ratio` times the
  bundle file's size (a decompression bomb declares both honestly, or fails its member sizes later);
- runs: at least one; each a plain `name` (a spec name, never a path), a `seed` that is a plain integer
  (not a bool, a float or a string) in the spec's range, `path` exactly `runs/<name>/seed-<seed>`, each
  path once, `role` target or source, `transfer_source` another listed run, and the run's files present;
- agreement: each run's `spec.resolved.yaml` (read through `safeyaml`) names the same spec and has no
  `extends:`, and its `metrics.json` the same spec and seed, so the folder the manifest names is the one
  the re-run writes.

The members reproducing needs (`needed_members`) are the listed runs' files; `final.pt` only of runs
another run transfers from. Nothing else is extracted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auxcli.errors import BundleError, SpecError

MAX_EXTRACTED_BYTES = 16 << 30  # 16 GiB: a full-size run's weights are ~100 MB; `--max-extracted-gib` raises it
MAX_COMPRESSION_RATIO = 200.0  # text compresses ~10x, weights ~1.1x; a bomb 1000x; `--max-compression-ratio`
RATIO_FLOOR_BYTES = 64 << 20  # below this total the ratio is not checked: small text bundles compress well
SEED_MAX = 2**32 - 1
AGREEMENT_MAX_BYTES = 1 << 20  # a bundled spec or metrics file: safeyaml's limit for any YAML file
RUN_MEMBERS = ("spec.resolved.yaml", "metrics.json", "history.csv")
ROLES = ("target", "source")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # auxcli.spec.NAME_PATTERN (no import: no pydantic here)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Limits:
    """How much a bundle may extract: bytes in all, and bytes per byte of the bundle file."""

    max_bytes: int = MAX_EXTRACTED_BYTES
    max_ratio: float = MAX_COMPRESSION_RATIO

    @classmethod
    def of(cls, max_gib: float | None = None, max_ratio: float | None = None) -> Limits:
        return cls(MAX_EXTRACTED_BYTES if max_gib is None else int(max_gib * (1 << 30)),
                   MAX_COMPRESSION_RATIO if max_ratio is None else float(max_ratio))


def check_manifest(path: Path, manifest: dict[str, Any], limits: Limits, compressed_bytes: int) -> None:
    """Members, sizes and runs of a manifest (see the module docstring); `BundleError` naming the field."""
    members = manifest["members"]
    total = 0
    for name, entry in members.items():
        size, digest = entry.get("size"), entry.get("sha256")
        if type(size) is not int or size < 0:
            raise BundleError(f"{path}: manifest member {name!r}: size {size!r} is not a non-negative integer")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise BundleError(f"{path}: manifest member {name!r}: sha256 {digest!r} is not 64 lowercase hex digits")
        total += size
    if total > limits.max_bytes:
        raise BundleError(f"{path}: the bundle would extract {total:,} bytes, over the limit of "
                          f"{limits.max_bytes:,} ({limits.max_bytes / (1 << 30):g} GiB); if you trust it, raise "
                          "the limit with --max-extracted-gib.")
    ratio = total / max(compressed_bytes, 1)
    if total > RATIO_FLOOR_BYTES and ratio > limits.max_ratio:
        raise BundleError(f"{path}: the bundle would extract {total:,} bytes from {compressed_bytes:,}, "
                          f"{ratio:.0f} times its size, over the limit of {limits.max_ratio:g} (a decompression "
                          "bomb?); if you trust it, raise the limit with --max-compression-ratio.")
    check_runs(path, manifest)


def check_runs(path: Path, manifest: dict[str, Any]) -> None:
    runs, members = manifest["runs"], manifest["members"]
    if not runs:
        raise BundleError(f"{path}: the manifest lists no runs; there is nothing to verify or reproduce")
    paths = set()
    for i, run in enumerate(runs):
        where = f"{path}: manifest runs[{i}]"
        if not isinstance(run, dict):
            raise BundleError(f"{where} is not a mapping")
        name, seed = run.get("name"), run.get("seed")
        if not isinstance(name, str) or not _NAME.match(name):
            raise BundleError(f"{where}.name {name!r} is not a spec name; allowed: 1-100 letters, digits, "
                              "'.', '_' or '-', starting with a letter or digit")
        if type(seed) is not int or not 0 <= seed <= SEED_MAX:
            raise BundleError(f"{where}.seed {seed!r} is not a plain integer from 0 to {SEED_MAX}")
        expected = f"runs/{name}/seed-{seed}"
        if run.get("path") != expected:
            raise BundleError(f"{where}.path {run.get('path')!r} does not match its name and seed; "
                              f"allowed: {expected!r}")
        if expected in paths:
            raise BundleError(f"{where}: {expected} is listed twice")
        paths.add(expected)
        if run.get("role") not in ROLES:
            raise BundleError(f"{where}.role {run.get('role')!r}; allowed: {', '.join(ROLES)}")
        for key in ("weights", "record"):
            if key in run and not isinstance(run[key], bool):
                raise BundleError(f"{where}.{key} {run[key]!r} is not true or false")
        metrics = run.get("metrics") or {}
        if not isinstance(metrics, dict) or not all(isinstance(k, str) and type(v) in (int, float)
                                                    for k, v in metrics.items()):
            raise BundleError(f"{where}.metrics is not a mapping of metric names to numbers")
        for key in ("mlflow_run_id", "experiment", "transfer_checkpoint_sha256"):
            if run.get(key) is not None and not isinstance(run[key], str):
                raise BundleError(f"{where}.{key} {run[key]!r} is not a string")
        for file in RUN_MEMBERS:
            if f"{expected}/{file}" not in members:
                raise BundleError(f"{where}: {expected}/{file} is not in the bundle")
        for file in ("spec.resolved.yaml", "metrics.json"):  # read into memory by `check_agreement`
            size = members[f"{expected}/{file}"]["size"]
            if size > AGREEMENT_MAX_BYTES:
                raise BundleError(f"{path}: bundle member {expected}/{file} is {size:,} bytes; a spec or metrics "
                                  f"file is at most {AGREEMENT_MAX_BYTES:,}")
    for i, run in enumerate(runs):
        source = run.get("transfer_source")
        if source is not None and (source not in paths or source == run["path"]):
            raise BundleError(f"{path}: manifest runs[{i}].transfer_source {source!r} is not another run of "
                              "the bundle")


def agreement_members(manifest: dict[str, Any]) -> set[str]:
    """The members `check_agreement` reads (small: a spec and a metrics file per run)."""
    return {f"{run['path']}/{file}" for run in manifest["runs"] for file in ("spec.resolved.yaml", "metrics.json")}


def check_agreement(path: Path, manifest: dict[str, Any], contents: Mapping[str, bytes]) -> None:
    """Each run's spec and metrics name the run the manifest lists (see the module docstring)."""
    from auxcli.safeyaml import decode_text, parse_yaml, plain

    for run in manifest["runs"]:
        member = f"{run['path']}/spec.resolved.yaml"
        data = contents.get(member, b"")
        try:
            spec = plain(parse_yaml(decode_text(data, member, "a resolved spec"), member, "a resolved spec"))
        except SpecError as exc:
            raise BundleError(f"{path}: bundle member {exc}") from None
        if not isinstance(spec, dict):
            raise BundleError(f"{path}: bundle member {member!r} is not a YAML mapping")
        if "extends" in spec:
            raise BundleError(f"{path}: bundle member {member!r} has extends:, which a resolved spec never has "
                              "(it would read files on this machine)")
        if spec.get("name") != run["name"]:
            raise BundleError(f"{path}: bundle member {member!r} names spec {spec.get('name')!r}, but the manifest "
                              f"lists {run['path']}: the manifest and its members disagree")
        member = f"{run['path']}/metrics.json"
        try:
            metrics = json.loads(contents.get(member, b""))
        except ValueError:
            metrics = None
        if not isinstance(metrics, dict):
            raise BundleError(f"{path}: bundle member {member!r} is not a JSON object")
        for key, expected in (("spec_name", run["name"]), ("seed", run["seed"])):
            if key in metrics and metrics[key] != expected:
                raise BundleError(f"{path}: bundle member {member!r} has {key} {metrics[key]!r}, but the manifest "
                                  f"lists {run['path']}: the manifest and its members disagree")


def needed_members(manifest: dict[str, Any]) -> set[str]:
    """The members reproducing reads: each listed run's files, `final.pt` only of transfer sources."""
    sources = {run.get("transfer_source") for run in manifest["runs"]}
    needed = set()
    for name in manifest["members"]:
        for run in manifest["runs"]:
            prefix = run["path"] + "/"
            if name.startswith(prefix):
                if name != prefix + "final.pt" or run["path"] in sources:
                    needed.add(name)
                break
    return needed


def inside_project(path: str) -> bool:
    """A bundled relative path that stays below the project root (no absolute path, no `..`)."""
    from pathlib import PurePosixPath, PureWindowsPath

    return not (PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or path.startswith("~")
                or ".." in PurePosixPath(path.replace("\\", "/")).parts)
