"""Which recorded results belong to a resolved spec and seed: the one answer every command asks (issue 19).

A result belongs to (spec, seed) when it was recorded under the spec's name and seed and its identity
(`auxcli.identity.result_id`) equals the spec's. Results live in two places and are read the same way:
- run folders `<runs_dir>/<name>/seed-<k>/`: the identity of the `spec.resolved.yaml` they hold;
- MLflow runs (and run folders read as runs when there is no store): the tag `auxcli.result_id`, or for
  runs recorded before it existed, the identity recomputed from their params (the flattened resolved spec).

`run`, `plan`, `run --dry-run`, `report`, `results`, `bundle`, `reproduce` and `analyze` ask this module;
none reads the folders' spec or the store's tags for this itself. Torch-free and MLflow-free.

States of (spec, seed), from its run folder:
- `done`: the completion marker is written (metrics, MLflow artifacts and the closed run all exist);
- `incomplete`: training finished (`metrics.json`) but recording did not; a re-run repairs it;
- `stale`: the folder holds a result of other settings (another identity);
- `partial`: `last.pt` only (a re-run resumes);
- `todo`: nothing yet.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auxcli.identity import IDENTITY_TAG, result_id, result_id_of_params, result_id_of_text
from auxcli.runfolder import RunFolder
from auxcli.spec import Spec

if TYPE_CHECKING:
    from auxcli.report.collect import RunRecord

STATES: tuple[str, ...] = ("done", "incomplete", "stale", "partial", "todo")


# ---------------------------------------------------------------------------------------------- run folders

def recorded_text(folder: RunFolder) -> str | None:
    """The folder's `spec.resolved.yaml` text (None when absent, unreadable or not UTF-8)."""
    try:
        return folder.spec.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def folder_result_id(folder: RunFolder) -> str | None:
    """The identity of the result the folder holds (None without a readable resolved spec)."""
    return result_id_of_text(recorded_text(folder), str(folder.spec))


def has_result(folder: RunFolder) -> bool:
    return folder.metrics.exists() or folder.last.exists() or folder.complete.exists()


def holds_other_settings(spec: Spec, folder: RunFolder) -> bool:
    """True when the folder holds something worth keeping (metrics, last.pt or the marker) of another
    identity than `spec`'s; a resolved spec that no longer validates counts as another identity."""
    text = recorded_text(folder)
    if not has_result(folder) or text is None:
        return False
    recorded = result_id_of_text(text, str(folder.spec))
    return recorded != result_id(spec)


def folder_state(spec: Spec, seed: int) -> str:
    """One of `STATES` for (spec, seed), from the run folder's files alone."""
    folder = RunFolder.of(spec, seed)
    try:
        return _state_of(spec, folder)
    except OSError as exc:  # a path the file system refuses even to look at (ENAMETOOLONG, EACCES)
        raise folder.unusable(exc) from None


def _state_of(spec: Spec, folder: RunFolder) -> str:
    if holds_other_settings(spec, folder):
        return "stale"
    if folder.complete.exists():
        return "done"
    if folder.metrics.exists():
        return "incomplete"
    if folder.last.exists():
        return "partial"
    return "todo"


def seed_states(specs: Sequence[Spec]) -> dict[tuple[str, int], str]:
    """`folder_state` of every (spec name, seed); each run folder is read once."""
    return {(spec.name, seed): folder_state(spec, seed) for spec in specs for seed in spec.seeds}


def finished_folders(spec: Spec) -> list[tuple[int, RunFolder]]:
    """(seed, folder) of the spec's seeds whose folder holds a finished, recorded result of this identity."""
    return [(seed, RunFolder.of(spec, seed)) for seed in spec.seeds if folder_state(spec, seed) == "done"]


def checkpoint_belongs(spec: Spec, checkpoint: Mapping[str, Any], folder: RunFolder) -> bool:
    """True when a `last.pt` was written for this identity: its `result_id`, or for a checkpoint written
    before identities existed, its whole-spec sha256 naming the folder's resolved spec of this identity."""
    if "result_id" in checkpoint:
        return checkpoint["result_id"] == result_id(spec)
    text = recorded_text(folder)
    return (text is not None and checkpoint.get("spec_sha256") == _sha256(text)
            and result_id_of_text(text) == result_id(spec))


def mlflow_run_belongs(spec: Spec, tags: Mapping[str, str], folder: RunFolder) -> bool:
    """True when an MLflow run's tags say it records this identity (older runs: their whole-spec sha256
    names the folder's resolved spec, of this identity)."""
    if IDENTITY_TAG in tags:
        return tags[IDENTITY_TAG] == result_id(spec)
    text = recorded_text(folder)
    return (text is not None and tags.get("auxcli.spec_sha256") == _sha256(text)
            and result_id_of_text(text) == result_id(spec))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- recorded runs

def record_result_id(record: RunRecord) -> str | None:
    """The identity of a recorded run: its tag, else recomputed from its params (older runs)."""
    return record.tags.get(IDENTITY_TAG) or result_id_of_params(record.params)


@dataclass(frozen=True)
class Selection:
    """Recorded runs split by whether they answer the wanted identities."""

    kept: list[RunRecord]
    other_settings: list[RunRecord]  # a wanted spec name, another identity


def select_records(records: Iterable[RunRecord], wanted: Mapping[str, str] | None) -> Selection:
    """Keep the runs of each spec name whose identity is `wanted[name]`; runs of names not in `wanted`
    (and report, analysis and parent runs, and runs that record no spec at all, whose identity cannot be
    known) pass through. `wanted=None` keeps everything."""
    kept: list[RunRecord] = []
    other: list[RunRecord] = []
    for record in records:
        name = record.spec_name
        if wanted is None or name is None or name not in wanted or record.is_report or record.is_spec_parent:
            kept.append(record)
            continue
        identity = record_result_id(record)
        (kept if identity is None or identity == wanted[name] else other).append(record)
    return Selection(kept, other)


def workspace_result_ids(runs_dirs: Iterable[Path]) -> dict[str, str]:
    """spec name -> the identity of the results in this workspace's run folders (what DVC checked out),
    for every name whose finished folders agree on one identity."""
    found: dict[str, set[str | None]] = {}
    for runs in runs_dirs:
        for marker in sorted(Path(runs).glob("*/seed-*/metrics.json")):
            folder = RunFolder(marker.parent)
            found.setdefault(marker.parent.parent.name, set()).add(folder_result_id(folder))
    return {name: next(iter(ids)) for name, ids in found.items() if len(ids) == 1 and None not in ids}


def settings_diff(spec_params: Mapping[str, str], record: RunRecord) -> list[str]:
    """`field: spec -> recorded` for the identity fields where a recorded run differs from the spec's
    flattened params (what `report --all-settings` prints beside each run of other settings)."""
    from auxcli.identity import is_identity_field

    keys = [k for k in dict.fromkeys([*spec_params, *record.params])
            if is_identity_field(k) and not k.startswith("runtime.resolved.")]
    return [f"{k}: {spec_params.get(k, '(unset)')} -> {record.params.get(k, '(unset)')}"
            for k in keys if spec_params.get(k) != record.params.get(k)]
