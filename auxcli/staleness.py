"""Why a run folder's result does not answer a spec: the field diff and the refusal `auxcli run` gives.

Which result belongs to which spec is `auxcli.catalogue`'s answer (by result identity, `auxcli.identity`);
this module only explains a mismatch: the identity fields whose recorded value differs from the spec's.
`spec_sha256` (the whole resolved spec's hash) is still recorded as the tag `auxcli.spec_sha256`, for
what ran exactly; it no longer decides whether a result is reused.
"""

from __future__ import annotations

import hashlib
from typing import Any

from auxcli.catalogue import STATES, recorded_text
from auxcli.errors import StaleResult
from auxcli.runfolder import RunFolder
from auxcli.spec import Spec
from auxcli.specfile import dump_spec

__all__ = ["STATES", "field_diff", "spec_diff", "spec_sha256", "stale_error"]


def spec_sha256(spec: Spec) -> str:
    """sha256 of the resolved spec's YAML text (tag `auxcli.spec_sha256`): exactly what ran."""
    return hashlib.sha256(dump_spec(spec).encode()).hexdigest()


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
    """`field: recorded -> now` for every identity field where the folder's resolved spec differs from
    `spec` (fields outside the identity, such as `seeds` or `runtime.threads`, never make a result stale)."""
    from auxcli.identity import identity_fields, spec_of_plain
    from auxcli.safeyaml import parse_yaml, plain

    text = recorded_text(folder) or ""
    try:
        old = plain(parse_yaml(text, str(folder.spec), "the resolved spec")) or {}
    except Exception:  # a damaged spec.resolved.yaml: say so instead of a diff
        old = {}
    if not isinstance(old, dict) or not old:
        return [f"{folder.spec} cannot be read"]
    recorded = spec_of_plain(old)  # defaults filled in as today, so only real differences show
    diff = field_diff(identity_fields(recorded.to_plain() if recorded else old), identity_fields(spec.to_plain()))
    return diff or [f"{folder.spec} is not a valid spec of this version"]


def stale_error(spec: Spec, seed: int, folder: RunFolder) -> StaleResult:
    """The refusal `auxcli run` gives for a folder that holds another resolved spec's run."""
    diff = spec_diff(spec, folder)
    shown = "; ".join(diff[:20]) + (f"; and {len(diff) - 20} more" if len(diff) > 20 else "")
    return StaleResult(
        f"{folder.root} holds a result of other settings of spec '{spec.name}' (seed {seed}): {shown}. "
        "Its result does not answer this spec. Re-run with --force to replace it, or keep both by giving this one "
        f"another name: --set name={spec.name}-2 (or edit name: in the spec).")


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


_UNSET = _Unset()


def _show(value: Any) -> str:
    return "(unset)" if value is _UNSET else "null" if value is None else str(value)
