"""A result's identity: the resolved-spec fields that change what one seed computes (issue 19).

One seed's result is fixed by its seed and by every resolved-spec field that changes its numbers: data,
model, task, augment, train, transfer and the numerics of `runtime` (device, precision, compile,
determinism, memory format, BatchNorm grouping). It is *not* changed by the fields in `NOT_IDENTITY`:
the spec's name and its list of seeds (adding seed 1 leaves seed 0's result as it was), where and how
runs are recorded (`tracking`), how many CPU threads compute it, the system-metrics switch, and the
folder the run folders live in. So:
- adding a seed trains only the new seed; running one seed of a multi-seed spec finds it done;
- a changed non-identity field resumes or reuses what is there; a changed identity field is a result of
  other settings (`auxcli run` refuses it with the field diff, `plan` says `stale`, `report` leaves it out).

The identity is a sha256 of the identity fields of the spec *as validated now* (defaults filled in), so a
`spec.resolved.yaml` written by an older version (which hashed the whole spec, tag `auxcli.spec_sha256`)
gets the same identity as the spec that would write it today. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from auxcli.spec import Spec

IDENTITY_TAG = "auxcli.result_id"  # MLflow tag, checkpoint key `result_id`, completion-marker key
# Dotted resolved-spec fields outside the identity (everything else is in it).
NOT_IDENTITY: tuple[str, ...] = ("name", "seeds", "tracking", "runtime.threads", "runtime.runs_dir",
                                 "runtime.system_metrics")


def identity_fields(plain_spec: dict[str, Any]) -> dict[str, Any]:
    """The resolved spec (plain mapping, `Spec.to_plain()`) without the `NOT_IDENTITY` fields."""
    out = json.loads(json.dumps(plain_spec))  # a deep copy of plain data
    for dotted in NOT_IDENTITY:
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def result_id(spec: Spec) -> str:
    """sha256 hex of the spec's identity fields: equal for two specs exactly when every seed's result is."""
    text = json.dumps(identity_fields(spec.to_plain()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def is_identity_field(dotted: str) -> bool:
    """False for a field in `NOT_IDENTITY` or below one (`tracking.uri`)."""
    return not any(dotted == f or dotted.startswith(f + ".") for f in NOT_IDENTITY)


def spec_of_plain(data: Any) -> Spec | None:
    """A recorded resolved spec (plain mapping) validated as today's `Spec`, or None if it no longer is one."""
    if not isinstance(data, dict):
        return None
    transfer = data.get("transfer")
    if isinstance(transfer, dict) and transfer.get("mode") == "finetune":
        # Resolved specs written before `TransferSpec` left `bn` out of a finetune hold its default, which a
        # finetune spec may not set (`cross_field_problems`); it has no effect on a finetune.
        data = {**data, "transfer": {k: v for k, v in transfer.items() if k != "bn"}}
    try:
        return Spec.model_validate(data)
    except Exception:  # ValidationError, or CrossFieldErrors (raised unwrapped by the model validator)
        return None


def result_id_of_text(text: str | None, source: str = "spec.resolved.yaml") -> str | None:
    """The identity of a recorded `spec.resolved.yaml` text; None when it is missing or not a valid spec."""
    if text is None:
        return None
    from auxcli.errors import SpecError
    from auxcli.safeyaml import parse_yaml, plain

    try:
        data = plain(parse_yaml(text, source, "a resolved spec"))
    except SpecError:
        return None
    spec = spec_of_plain(data)
    return result_id(spec) if spec is not None else None


def result_id_of_params(params: dict[str, str]) -> str | None:
    """The identity of an MLflow run recorded before the identity tag existed, from its params (the
    flattened resolved spec, `auxcli.tracking.flatten`, values as text); None when they are not a spec."""
    from auxcli.errors import SpecError
    from auxcli.safeyaml import parse_yaml, plain

    nested: dict[str, Any] = {}
    for dotted, text in params.items():
        if dotted.startswith("runtime.resolved."):  # the resolved runtime, logged beside the spec
            continue
        try:
            value = plain(parse_yaml(text, dotted, "a value", value=True)) if text != "None" else None
        except SpecError:
            value = text
        node = nested
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                return None
            node = child
        node[leaf] = value
    spec = spec_of_plain(nested)
    return result_id(spec) if spec is not None else None
