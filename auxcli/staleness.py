"""Which resolved spec a run folder belongs to, and what state its result is in (torch-free).

A run folder and its MLflow run belong to one resolved spec: `spec.resolved.yaml` is written when the
run starts and its sha256 is the `auxcli.spec_sha256` tag. A spec that resolves differently (any field,
`--set train.lr=0.01` included) is never satisfied by that result (issue 9): `auxcli run` refuses with a
field-by-field diff, `auxcli plan` shows `stale`.

States of (spec, seed), as `auxcli plan` prints them:
- `done`: the completion marker is written (metrics, MLflow artifacts and the closed run all exist);
- `incomplete`: training finished (`metrics.json`) but recording did not; a re-run repairs it without
  retraining;
- `stale`: the folder holds another resolved spec's run;
- `partial`: `last.pt` only (a re-run resumes);
- `todo`: nothing yet.
"""

from __future__ import annotations

import hashlib
from typing import Any

from auxcli.errors import StaleResult
from auxcli.runfolder import RunFolder
from auxcli.spec import Spec
from auxcli.specfile import dump_spec

STATES: tuple[str, ...] = ("done", "incomplete", "stale", "partial", "todo")


def spec_sha256(spec: Spec) -> str:
    """sha256 of the resolved spec's YAML text: the identity of a result (tag `auxcli.spec_sha256`)."""
    return hashlib.sha256(dump_spec(spec).encode()).hexdigest()


def recorded_text(folder: RunFolder) -> str | None:
    try:
        return folder.spec.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def is_stale(spec: Spec, folder: RunFolder) -> bool:
    """True when the folder holds a run of a different resolved spec (and anything worth keeping)."""
    text = recorded_text(folder)
    has_result = folder.metrics.exists() or folder.last.exists() or folder.complete.exists()
    return has_result and text is not None and text != dump_spec(spec)


def run_state(spec: Spec, seed: int) -> str:
    """One of `STATES` for (spec, seed), from the run folder's files alone."""
    folder = RunFolder.of(spec, seed)
    if is_stale(spec, folder):
        return "stale"
    if folder.complete.exists():
        return "done"
    if folder.metrics.exists():
        return "incomplete"
    if folder.last.exists():
        return "partial"
    return "todo"


def field_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """`train.lr: 0.1 -> 0.01` lines for every leaf that differs between two plain mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            lines += field_diff(old.get(key, _UNSET), new.get(key, _UNSET), f"{prefix}{key}.")
        return lines
    if old == new:
        return []
    return [f"{prefix.rstrip('.')}: {_show(old)} -> {_show(new)}"]


def spec_diff(spec: Spec, folder: RunFolder) -> list[str]:
    """`field: recorded -> now` for every field where the folder's resolved spec differs from `spec`."""
    from auxcli.safeyaml import parse_yaml, plain

    text = recorded_text(folder) or ""
    try:
        old = plain(parse_yaml(text, str(folder.spec), "the resolved spec")) or {}
    except Exception:  # a damaged spec.resolved.yaml: say so instead of a diff
        old = {}
    return field_diff(old, spec.to_plain()) if old else [f"{folder.spec} cannot be read"]


def stale_error(spec: Spec, seed: int, folder: RunFolder) -> StaleResult:
    """The refusal `auxcli run` gives for a folder that holds another resolved spec's run."""
    diff = spec_diff(spec, folder)
    shown = "; ".join(diff[:20]) + (f"; and {len(diff) - 20} more" if len(diff) > 20 else "")
    return StaleResult(
        f"{folder.root} holds a run of a different spec '{spec.name}' (seed {seed}): {shown}. Its result does "
        f"not answer this spec. Re-run with --force to replace it, or keep both by giving this one another "
        f"name: --set name={spec.name}-2 (or edit name: in the spec).")


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


_UNSET = _Unset()


def _show(value: Any) -> str:
    return "(unset)" if value is _UNSET else "null" if value is None else str(value)
