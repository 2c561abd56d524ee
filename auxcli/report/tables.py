"""The report as data: the study's tables with our numbers beside the paper's, and a generic table.

Runs map to study rows by spec name (no SPEC_OR_DIR arguments) or by spec file stem (with arguments): a
name/stem that equals a row key, or ends with `-<row key>`, fills that row; the prefix names the suite
(`mini-table1-gt` -> suite `mini`), and each suite gets its own copy of the tables. Specs that map to no
row go to the generic table. Values are fractions; `delta_pp` is ours - paper in percentage points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from auxcli.report.aggregate import Aggregate, Group
from auxcli.report.beyond import BeyondTable, beyond_tables, claimed_names
from auxcli.report.paper import TABLES, PaperTable, match_key

PAPER_SOURCE = ("Yamada, Iwamura, Kise, 'A study of additional tasks that improve image classification "
                "accuracy' (IEICE technical report), Tables 1-5; summarised in docs/study.md")
GENERIC_METRICS: tuple[tuple[str, str], ...] = (
    ("final_train_acc", "train acc"), ("final_test_acc", "test acc"),
    ("final_train_aux_acc", "aux train acc"), ("final_test_aux_acc", "aux test acc"),
)


@dataclass(frozen=True)
class SpecRef:
    """A spec named on the command line: where it is and its resolved, flattened params."""

    name: str
    path: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return Path(self.path).stem


@dataclass
class Row:
    key: str  # the study row (spec stem without the suite prefix)
    label: str
    spec_name: str | None  # the spec whose runs fill the row (None: no spec known)
    values: dict[str, float | None]  # column -> mean over seeds, fraction
    std: dict[str, float | None]  # column -> sample std (None with fewer than 2 runs)
    n: int  # finished runs aggregated
    run_ids: list[str]
    paper: dict[str, float]
    paper_std: dict[str, float] | None
    delta_pp: dict[str, float | None]  # ours - paper, percentage points
    protocol: str | None  # Tables 2-3: linear (BN frozen/train), finetune, or none
    sources: list[dict[str, str | None]]  # Tables 2-3: {"spec", "run_id"} the weights came from
    excluded: dict[str, int]  # runs left out, by status
    missing_command: str | None  # how to produce the row when it has no finished run


@dataclass
class Table:
    id: str
    suite: str  # "" for the study's own specs, else the name prefix (e.g. "mini")
    title: str
    columns: list[dict[str, str]]  # {"name", "metric", "label"}
    paper_runs: int | None  # runs per row in the study
    transfer: bool
    rows: list[Row]


@dataclass
class GenericRow:
    spec_name: str
    task: str
    model: str
    values: dict[str, float | None]  # summary metric -> mean, fraction
    std: dict[str, float | None]
    n: int
    run_ids: list[str]
    excluded: dict[str, int]
    missing_command: str | None


@dataclass
class Report:
    tables: list[Table]
    generic: list[GenericRow]
    footer: dict
    beyond: list[BeyondTable] = field(default_factory=list)  # specs/beyond/ beside their plain runs

    def to_dict(self) -> dict:
        return asdict(self)


def build_report(agg: Aggregate, *, specs: list[SpecRef] | None = None, footer: dict | None = None) -> Report:
    """Tables for every suite that has runs (or, with `specs`, every suite named), then the rest."""
    if specs is None:
        named = {name: (name, None) for name in agg.spec_names()}  # name -> (mapping name, spec)
    else:
        named = {s.name: (s.stem, s) for s in specs}
    by_row: dict[tuple[str, str], tuple[str, SpecRef | None]] = {}
    generic: list[tuple[str, SpecRef | None]] = []
    beyond_names = {name: (mapping_name, spec.path if spec else None)
                    for name, (mapping_name, spec) in named.items() if match_key(mapping_name) is None}
    in_beyond = claimed_names(beyond_names)
    for name, (mapping_name, spec) in named.items():
        hit = match_key(mapping_name)
        if name in in_beyond:
            continue
        if hit is None or hit in by_row:
            generic.append((name, spec))
        else:
            by_row[hit] = (name, spec)

    suites = sorted({suite for suite, _ in by_row}, key=lambda s: (s != "", s))
    spec_dirs = {match_key(s.stem)[0]: Path(s.path).parent for s in specs or () if match_key(s.stem)}
    tables = [_table(t, suite, by_row, agg, spec_dirs) for suite in suites for t in TABLES]
    rows = [_generic_row(name, spec, agg) for name, spec in sorted(generic, key=lambda x: x[0])]
    beyond = beyond_tables({n: v for n, v in beyond_names.items() if n in in_beyond}, agg)  # in spec order
    return Report(tables, rows, {**base_footer(agg), **(footer or {})}, beyond)


def base_footer(agg: Aggregate) -> dict:
    return {
        "values": "fractions in [0, 1]; delta_pp = ours - paper in percentage points",
        "std": "sample (ddof=1)",
        "runs": "FINISHED runs only; the latest run per (spec, seed)",
        "excluded": agg.excluded_counts(),
        "excluded_runs": [{"run_id": r.run_id, "run_name": r.run_name, "spec_name": r.spec_name,
                           "status": r.status} for r in agg.excluded],
        "superseded": len(agg.superseded),
        "untagged": agg.untagged,
        "report_runs": agg.report_runs,
        "paper": PAPER_SOURCE,
    }


def _table(paper: PaperTable, suite: str, by_row: dict, agg: Aggregate, spec_dirs: dict[str, Path]) -> Table:
    rows = []
    for prow in paper.rows:
        name, spec = by_row.get((suite, prow.key), (None, None))
        group = agg.groups.get(name) if name else None
        values, std, delta = {}, {}, {}
        for col in paper.columns:
            s = group.stat(col.metric) if group else None
            values[col.name] = s.mean if s else None
            std[col.name] = s.std if s else None
            delta[col.name] = round((s.mean - prow.values[col.name]) * 100, 4) if s else None
        protocol, sources = (None, [])
        if paper.transfer:
            protocol, sources = _lineage(group, spec)
        path = spec.path if spec else _guess_path(suite, prow.key, spec_dirs.get(suite))
        rows.append(Row(
            key=prow.key, label=prow.label, spec_name=name,
            values=values, std=std, n=group.n if group else 0, run_ids=group.run_ids if group else [],
            paper=dict(prow.values), paper_std=dict(prow.std) if prow.std else None, delta_pp=delta,
            protocol=protocol, sources=sources, excluded=agg.excluded_counts(name) if name else {},
            missing_command=None if group else f"auxcli run {path}",
        ))
    title = paper.title + (f" [{suite}]" if suite else "")
    columns = [{"name": c.name, "metric": c.metric, "label": c.label} for c in paper.columns]
    return Table(paper.id, suite, title, columns, paper.runs, paper.transfer, rows)


def _guess_path(suite: str, key: str, folder: Path | None) -> str:
    """Where the suite keeps the row's spec: specs/paper/<key>.yaml, specs/<suite>/<suite>-<key>.yaml."""
    stem = f"{suite}-{key}" if suite else key
    folder = folder or Path("specs") / (suite or "paper")
    return str(folder / f"{stem}.yaml")


def protocol_of(params: dict[str, str], tags: dict[str, str]) -> str:
    """The transfer protocol in the study's words, from lineage tags, else the spec's params."""
    mode = tags.get("auxcli.transfer.mode") or params.get("transfer.mode")
    if not mode or mode == "null":
        return "none (trained from scratch)"
    if mode == "linear":
        return f"linear, BN {tags.get('auxcli.transfer.bn') or params.get('transfer.bn') or 'frozen'}"
    return mode


def _lineage(group: Group | None, spec: SpecRef | None) -> tuple[str | None, list[dict[str, str | None]]]:
    if group is None:
        return (protocol_of(spec.params, {}) if spec else None), []
    protocols = list(dict.fromkeys(protocol_of(r.params, r.tags) for r in group.runs))
    sources: dict[tuple[str | None, str | None], None] = {}
    for r in group.runs:
        src_spec = r.tags.get("auxcli.transfer.source_spec") or r.params.get("transfer.from")
        run_id = r.tags.get("auxcli.transfer.source_run_id")
        if src_spec and src_spec != "null":  # run id "none": `from: init` has no source run
            sources.setdefault((src_spec, run_id if run_id not in ("", "none") else None), None)
    return "; ".join(protocols), [{"spec": s, "run_id": rid} for s, rid in sources]


def describe_task(params: dict[str, str]) -> str:
    """`gt`, `gt + cutout`, `cutout alone`, `gt + labelset(superclass)` from flattened params."""
    labels = params.get("task.labels", "?")
    kind = params.get("task.aux.kind")
    if params.get("task.joint") == "sla":
        return f"{labels} x rotation (SLA joint)"
    if not kind or kind == "null":
        return labels
    if kind == "labelset":
        kind = f"labelset({params.get('task.aux.labels', '?')})"
    return f"{kind} alone" if labels == "none" else f"{labels} + {kind}"


def describe_model(params: dict[str, str]) -> str:
    backbone = params.get("model.backbone", "?")
    depth = params.get("model.depth")
    name = backbone if not depth or depth == "null" else f"{backbone}-{depth}"
    widen = params.get("model.widen_factor")
    return name if not widen or widen == "null" else f"{name}-{widen}"  # wrn-28-10


def _generic_row(name: str, spec: SpecRef | None, agg: Aggregate) -> GenericRow:
    group = agg.groups.get(name)
    params = group.runs[-1].params if group else (spec.params if spec else {})
    values, std = {}, {}
    for metric, _ in GENERIC_METRICS:
        s = group.stat(metric) if group else None
        values[metric] = s.mean if s else None
        std[metric] = s.std if s else None
    missing = None if group else (f"auxcli run {spec.path}" if spec else None)
    return GenericRow(name, describe_task(params) if params else "?", describe_model(params) if params else "?",
                      values, std, group.n if group else 0, group.run_ids if group else [],
                      agg.excluded_counts(name), missing)
