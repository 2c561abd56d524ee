"""`auxcli run --dry-run`: what each seed's run would do, where it would write, and why; trains nothing.

A seed's state comes from its run folder (`auxcli.runfolder`), compared with the spec as resolved now:
- `todo`: nothing there yet; the run trains from epoch 1;
- `partial`: `last.pt` without `metrics.json`; the run resumes after the last epoch in `history.csv`;
- `done`: `metrics.json` written with this very spec; the run skips it (`--force` retrains);
- `stale`: the folder was written by a different spec (its `spec.resolved.yaml` differs); a finished
  one is skipped and an unfinished one refused until `--force` starts it over.
Torch-free and MLflow-free: it reads files only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from ruamel.yaml import YAML

from auxcli.runfolder import RunFolder
from auxcli.spec import Spec
from auxcli.specfile import dump_spec
from auxcli.tracking import flatten, resolve_tracking_uri

STATES: tuple[str, ...] = ("todo", "partial", "done", "stale")


@dataclass(frozen=True)
class SeedPlan:
    spec: str
    seed: int
    state: str  # todo | partial | done | stale
    action: str  # what `auxcli run` would do now
    why: str
    folder: str
    mlflow: str  # store, experiment and run name


def seed_plan(spec: Spec, seed: int, *, force: bool = False) -> SeedPlan:
    folder = RunFolder.of(spec, seed)
    changed = _changed_keys(folder, spec)
    epochs = _epochs_done(folder)
    if folder.is_finished():
        state = "stale" if changed else "done"
        why = (f"finished with another spec ({changed})" if changed
               else f"finished ({folder.metrics.name} written)")
        action = "retrain from epoch 1 (--force)" if force else "skip (--force retrains)"
    elif folder.last.exists():
        state = "stale" if changed else "partial"
        if force:
            action = "retrain from epoch 1 (--force)"
        elif changed:
            action = "refuse: last.pt belongs to another spec (--force starts over)"
        else:
            action = f"resume after epoch {epochs} of {spec.train.epochs}"
        why = (f"last.pt from another spec ({changed})" if changed
               else f"interrupted after epoch {epochs} (last.pt, no metrics.json)")
    else:
        state, action, why = "todo", f"train epochs 1-{spec.train.epochs}", "no run folder yet"
    store = f"{resolve_tracking_uri(spec.tracking.uri)} experiment {spec.tracking.experiment!r}"
    return SeedPlan(spec.name, seed, state, action, why, str(folder.root), f"{store} run {spec.name}-s{seed}")


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


def _changed_keys(folder: RunFolder, spec: Spec) -> str:
    """The dotted keys whose values differ from the folder's `spec.resolved.yaml` ('' when none, or no
    file to compare with)."""
    if not folder.spec.exists():
        return ""
    now = dump_spec(spec)
    before_text = folder.spec.read_text(encoding="utf-8")
    if before_text == now:
        return ""
    yaml = YAML(typ="safe", pure=True)
    before = flatten(yaml.load(io.StringIO(before_text)) or {})
    after = flatten(yaml.load(io.StringIO(now)))
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    shown = ", ".join(f"{k}: {before.get(k, '-')} -> {after.get(k, '-')}" for k in keys[:4])
    return shown + (f" and {len(keys) - 4} more" if len(keys) > 4 else "") if keys else "spec text differs"


def _epochs_done(folder: RunFolder) -> int:
    """Rows of history.csv: the epochs last.pt holds (written together after every epoch)."""
    if not folder.history.exists():
        return 0
    return max(0, len(folder.history.read_text(encoding="utf-8").strip().splitlines()) - 1)
