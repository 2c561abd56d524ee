"""Pure aggregation of run records: finished runs grouped by spec name, mean and sample std over seeds.

- Only FINISHED runs count; the study reports complete runs (docs/study.md, "Training recipe": the
  last epoch's accuracy). Other runs (RUNNING, FAILED, KILLED) are kept aside and counted.
- One run per (spec, seed): when a seed was run again, the latest finished run counts and the older ones
  are counted as superseded, so a rerun never weighs a seed twice.
- std is the sample standard deviation (ddof=1), as for Table 5's "mean +- std over 4 runs"; with one
  run there is no std.
- Runs tagged `auxcli.report=true` (the report's own figures; older versions logged them beside the
  training runs), spec parent runs (`auxcli.parent=true`, the seeds' aggregate) and runs without
  `auxcli.spec_name` are never aggregated.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from auxcli.report.collect import RunRecord

FINISHED = "FINISHED"


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # None when n == 1
    n: int


def stat(values: Sequence[float]) -> Stat | None:
    """Mean and sample std (ddof=1) of finite values; None when there are none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return Stat(statistics.fmean(finite), std, len(finite))


@dataclass(frozen=True)
class Group:
    """The finished runs of one spec, one per seed, ordered by seed."""

    spec_name: str
    runs: tuple[RunRecord, ...]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def run_ids(self) -> list[str]:
        return [r.run_id for r in self.runs]

    def stat(self, metric: str) -> Stat | None:
        return stat([r.metrics[metric] for r in self.runs if metric in r.metrics])

    def values(self, key: str, where: str = "params") -> list[str]:
        """Distinct values of a param or tag over the runs, in run order."""
        seen: dict[str, None] = {}
        for r in self.runs:
            value = getattr(r, where).get(key)
            if value is not None:
                seen.setdefault(value, None)
        return list(seen)


@dataclass(frozen=True)
class Aggregate:
    groups: dict[str, Group]  # spec name -> finished runs, names sorted
    excluded: tuple[RunRecord, ...]  # not FINISHED
    superseded: tuple[RunRecord, ...]  # finished, but a later finished run has the same (spec, seed)
    untagged: int  # runs without auxcli.spec_name
    report_runs: int  # runs tagged auxcli.report=true or auxcli.analysis=true (`RunRecord.is_report`)

    def excluded_counts(self, spec_name: str | None = None) -> dict[str, int]:
        """Left-out runs by status, for one spec or all of them; statuses sorted."""
        counts = Counter(r.status for r in self.excluded if spec_name is None or r.spec_name == spec_name)
        return dict(sorted(counts.items()))

    def spec_names(self) -> list[str]:
        """Every spec with at least one run, finished or not."""
        return sorted(set(self.groups) | {r.spec_name for r in self.excluded if r.spec_name})


def aggregate(records: Iterable[RunRecord], only: set[str] | None = None) -> Aggregate:
    """Group runs by spec name (restricted to `only` when given); see the module docstring for the rules."""
    latest: dict[tuple[str, int | None, str | None], RunRecord] = {}
    superseded: list[RunRecord] = []
    excluded: list[RunRecord] = []
    untagged = report_runs = 0
    for record in records:
        if record.is_report:
            report_runs += 1
            continue
        if record.is_spec_parent:  # the seeds' aggregate, not a seed
            continue
        if not record.spec_name:
            untagged += 1
            continue
        if only is not None and record.spec_name not in only:
            continue
        if record.status != FINISHED:
            excluded.append(record)
            continue
        # A run without a seed tag cannot be a rerun of another: key it by its own id.
        key = (record.spec_name, record.seed, None if record.seed is not None else record.run_id)
        previous = latest.get(key)
        if previous is None or (record.start_time, record.run_id) > (previous.start_time, previous.run_id):
            latest[key] = record
            if previous is not None:
                superseded.append(previous)
        else:
            superseded.append(record)

    by_spec: dict[str, list[RunRecord]] = {}
    for record in latest.values():
        by_spec.setdefault(record.spec_name, []).append(record)  # type: ignore[arg-type]
    groups = {
        name: Group(name, tuple(sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, r.run_id))))
        for name, runs in sorted(by_spec.items())
    }
    def order(r: RunRecord) -> tuple:
        return (r.spec_name or "", r.seed or 0, r.run_id)

    return Aggregate(groups, tuple(sorted(excluded, key=order)), tuple(sorted(superseded, key=order)),
                     untagged, report_runs)


def mean_curve(histories: Iterable[Sequence[tuple[int, float]]], max_step: int | None = None
               ) -> tuple[list[int], list[float]]:
    """The mean over runs of per-epoch values, step by step (steps that any run logged)."""
    by_step: dict[int, list[float]] = {}
    for history in histories:
        for step, value in history:
            if (max_step is None or step <= max_step) and math.isfinite(value):
                by_step.setdefault(int(step), []).append(float(value))
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[s]) for s in steps]
