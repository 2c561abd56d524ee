"""`auxcli run --dry-run`: what each seed's run would do, where it would write, and why; trains nothing.

A seed's state is `auxcli.catalogue.folder_state` (done, incomplete, stale, partial, todo), read from its
run folder and compared with the spec as resolved now; the action is what `auxcli run` does in that
state. Torch-free and MLflow-free: it reads files only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from auxcli.runfolder import RunFolder
from auxcli.spec import Spec
from auxcli.catalogue import STATES, folder_state
from auxcli.staleness import spec_diff
from auxcli.tracking import resolve_tracking_uri


@dataclass(frozen=True)
class SeedPlan:
    spec: str
    seed: int
    state: str  # one of auxcli.catalogue.STATES
    action: str  # what `auxcli run` would do now
    why: str
    folder: str
    mlflow: str  # store, experiment and run name
    refused: bool = False  # `auxcli run` would refuse this seed (exit 2): `run --dry-run` exits 2 too


def seed_plan(spec: Spec, seed: int, *, force: bool = False) -> SeedPlan:
    folder = RunFolder.of(spec, seed)
    state = folder_state(spec, seed)
    epochs = folder.epochs_done()
    retrain = "retrain from epoch 1 (--force)"
    if state == "done":
        action, why = ("skip (--force retrains)", f"finished and recorded ({folder.complete.name} written)")
    elif state == "incomplete":
        action = "complete the MLflow record without retraining"
        why = f"training finished ({folder.metrics.name}) but its record was not completed"
    elif state == "stale":
        action = (f"refuse, exit 2 (--force replaces it; --set name={spec.name}-2 keeps both)")
        why = f"the folder holds another spec's result ({_summary(spec_diff(spec, folder))})"
    elif state == "partial":
        action = f"resume after epoch {epochs} of {spec.train.epochs}"
        why = f"interrupted after epoch {epochs} (last.pt, no metrics.json)"
    else:
        action, why = f"train epochs 1-{spec.train.epochs}", "no run folder yet"
    if force and state != "todo":
        action = retrain
    store = f"{resolve_tracking_uri(spec.tracking.uri)} experiment {spec.tracking.experiment!r}"
    return SeedPlan(spec.name, seed, state, action, why, str(folder.root), f"{store} run {spec.name}-s{seed}",
                    refused=state == "stale" and not force)


def dry_run(specs: Sequence[Spec], *, seeds: list[int] | None = None, force: bool = False) -> list[SeedPlan]:
    return [seed_plan(spec, seed, force=force) for spec in specs for seed in (seeds or spec.seeds)]


def format_dry_run(plans: Sequence[SeedPlan]) -> str:
    """One block per seed, then the count per state."""
    lines = []
    for p in plans:
        lines += [f"{p.spec} seed {p.seed}: {p.state} -> {p.action}", f"  why:    {p.why}",
                  f"  folder: {p.folder}", f"  mlflow: {p.mlflow}"]
    counts = ", ".join(f"{sum(p.state == s for p in plans)} {s}" for s in STATES)
    lines.append(f"dry run: {len(plans)} runs ({counts}); nothing was trained or written")
    return "\n".join(lines) + "\n"


def _summary(diff: list[str]) -> str:
    return ", ".join(diff[:4]) + (f" and {len(diff) - 4} more" if len(diff) > 4 else "")
