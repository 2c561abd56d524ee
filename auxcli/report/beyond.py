"""The "beyond the study" table: harder auxiliary tasks and the Cutout/RICAP reference backbone, each beside
the plain run of the same backbone (`specs/beyond/`).

The study concludes that its auxiliary tasks were too easy to help (docs/study.md, Experiment 2); these rows test
that with rotation prediction (RotNet, Gidaris et al. 2018), SLA's joint labels (Lee et al. 2020) and, on
WRN-28-10, the augmentations whose own papers report CIFAR-100 gains (Cutout, RICAP). There are no paper
numbers to compare with here (other recipes, other backbones): the reference is our own plain run, and
`delta_pp` is ours - plain in percentage points. One SLA run fills two rows: single and aggregated inference
are two readings of the same trained network.

Runs map to rows like the study's tables: a spec name (or, with SPEC_OR_DIR arguments, file stem) equal to a
key, or ending with `-<key>`, whose prefix names the suite (`mini-beyond-sla` -> suite `mini`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auxcli.report.aggregate import Aggregate
from auxcli.report.paper import match_key

RESNET_PLAIN = "beyond-resnet110-plain"
WRN_PLAIN = "beyond-wrn28-10-plain"


@dataclass(frozen=True)
class BeyondRowDef:
    key: str  # spec stem in specs/beyond/
    label: str
    metric: str  # summary metric read from the row's runs
    baseline: str  # key of the plain run on the same backbone (read with final_test_acc)


BEYOND_ROWS: tuple[BeyondRowDef, ...] = (
    BeyondRowDef("beyond-rotation", "ResNet-110 + rotation head (RotNet, all 4 copies)", "final_test_acc",
                 RESNET_PLAIN),
    BeyondRowDef("beyond-sla", "ResNet-110, SLA joint labels, single inference", "final_test_acc", RESNET_PLAIN),
    BeyondRowDef("beyond-sla", "ResNet-110, SLA joint labels, aggregated inference", "final_test_acc_aggregated",
                 RESNET_PLAIN),
    BeyondRowDef("beyond-wrn28-10-cutout", "WRN-28-10 + Cutout 8x8 (DeVries & Taylor 2017)", "final_test_acc",
                 WRN_PLAIN),
    BeyondRowDef("beyond-wrn28-10-ricap", "WRN-28-10 + RICAP beta 0.3 (Takahashi et al. 2018)", "final_test_acc",
                 WRN_PLAIN),
)
BASELINE_METRIC = "final_test_acc"


def beyond_keys() -> set[str]:
    """Every spec stem the beyond table reads: its rows and their plain runs."""
    return {row.key for row in BEYOND_ROWS} | {row.baseline for row in BEYOND_ROWS}


@dataclass
class BeyondRow:
    key: str
    label: str
    metric: str
    spec_name: str | None
    value: float | None  # mean over seeds, fraction
    std: float | None  # sample std (None with fewer than 2 runs)
    n: int
    baseline_spec: str | None
    baseline: float | None  # the plain run's mean final_test_acc
    baseline_std: float | None
    baseline_n: int
    delta_pp: float | None  # ours - plain, percentage points
    run_ids: list[str]
    baseline_run_ids: list[str]
    missing_command: str | None  # how to produce the missing run(s)


@dataclass
class BeyondTable:
    id: str
    suite: str
    title: str
    rows: list[BeyondRow]


def beyond_tables(names: dict[str, tuple[str, str | None]], agg: Aggregate) -> list[BeyondTable]:
    """One table per suite that has any of the beyond specs. `names` maps each spec name to (the name
    rows match on: the name or the file stem, that spec's file path or None)."""
    by_key: dict[tuple[str, str], tuple[str, str | None]] = {}
    for name, (mapping_name, path) in names.items():
        hit = match_key(mapping_name, beyond_keys())
        if hit is not None and hit not in by_key:
            by_key[hit] = (name, path)
    suites = sorted({suite for suite, _ in by_key}, key=lambda s: (s != "", s))
    return [_table(suite, by_key, agg) for suite in suites]


def claimed_names(names: dict[str, tuple[str, str | None]]) -> set[str]:
    """The spec names the beyond table shows (so the generic table leaves them out)."""
    keys = beyond_keys()
    return {name for name, (mapping_name, _) in names.items() if match_key(mapping_name, keys) is not None}


def _table(suite: str, by_key: dict, agg: Aggregate) -> BeyondTable:
    folder = next((Path(p).parent for (s, _), (_, p) in by_key.items() if s == suite and p), None)

    def lookup(key: str):
        name, path = by_key.get((suite, key), (None, None))
        group = agg.groups.get(name) if name else None
        stem = f"{suite}-{key}" if suite else key
        where = path or str((folder or Path("specs") / "beyond") / f"{stem}.yaml")
        return name, group, where

    rows = []
    for row in BEYOND_ROWS:
        name, group, path = lookup(row.key)
        base_name, base_group, base_path = lookup(row.baseline)
        s = group.stat(row.metric) if group else None
        b = base_group.stat(BASELINE_METRIC) if base_group else None
        missing = [f"auxcli run {p}" for p, g in ((path, group), (base_path, base_group)) if g is None]
        rows.append(BeyondRow(
            key=row.key, label=row.label, metric=row.metric, spec_name=name,
            value=s.mean if s else None, std=s.std if s else None, n=group.n if group else 0,
            baseline_spec=base_name, baseline=b.mean if b else None, baseline_std=b.std if b else None,
            baseline_n=base_group.n if base_group else 0,
            delta_pp=round((s.mean - b.mean) * 100, 4) if s and b else None,
            run_ids=group.run_ids if group else [], baseline_run_ids=base_group.run_ids if base_group else [],
            missing_command="; ".join(dict.fromkeys(missing)) or None,
        ))
    title = "Beyond the study: harder auxiliary tasks and WRN-28-10, test acc vs the plain run"
    return BeyondTable("beyond", suite, title + (f" [{suite}]" if suite else ""), rows)
