"""`auxcli report`: the study's tables from the MLflow store, our numbers beside the paper's.

collect (MLflow -> records; the run folders when there is no store) -> select (`auxcli.catalogue`: only
the results whose identity is the reported spec's: the resolved specs named, else the workspace's run
folders) -> aggregate (pure: finished runs by
spec, mean and sample std over seeds) -> tables (the study's rows and columns, generic rows) -> render
(text, github, latex, csv, json) -> plots (optional PNGs, also logged to an `auxcli-report` run tagged
`auxcli.report=true` in the experiment `<experiment>-reports`, apart from the training runs).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from auxcli.errors import SpecError, TrackingError

DEFAULT_PLOTS_DIR = "reports"


@dataclass
class ReportOutput:
    text: str  # the rendering
    written: list[Path] = field(default_factory=list)  # files under --out / the plots folder
    report_run_id: str | None = None  # the auxcli-report run holding the figures
    other_settings: int = 0  # runs of a reported spec name with another result identity, left out


def make_report(*, paths: Sequence[Path] = (), overrides: Sequence[str] = (), tracking_uri: str | None = None,
                experiment: str | None = None, fmt: str = "text", out: Path | None = None,
                plots: bool = False, all_settings: bool = False) -> ReportOutput:
    """Read the store, build and render the report; write it under `out` and the plots (if asked) under
    `out` or `reports/`. Only results whose identity is the reported spec's count (`auxcli.catalogue`):
    with `paths`, the specs as resolved with `overrides`; without, the identity of this workspace's run
    folders for each spec name that has them. The others are counted in the footer (`all_settings`: listed).
    Raises `TrackingError` for a missing/unreachable store, an unknown experiment or
    one without runs, `SpecError` for bad specs."""
    from auxcli.report.aggregate import aggregate
    from auxcli.report.collect import Store, display_uri
    from auxcli.report.render import EXTENSIONS, render
    from auxcli.report.tables import build_report
    from auxcli.tracking import resolve_tracking_uri

    from auxcli.catalogue import select_records, workspace_result_ids
    from auxcli.project import anchored

    refs, spec_uri, spec_experiment, wanted = (_spec_refs(paths, overrides, tracking_uri is None, experiment is None)
                                               if paths else (None, None, None, None))
    uri = resolve_tracking_uri(tracking_uri or spec_uri)
    experiment = experiment or spec_experiment or "auxcli"
    folders = _run_folders(uri, refs)  # no MLflow store here (a fresh clone + dvc pull): read the run folders
    store = folders or Store(uri, experiment)
    records = store.runs()
    if not any(not r.is_report for r in records):
        raise TrackingError(f"experiment {experiment!r} in the MLflow store {display_uri(uri)} has no runs yet; "
                            "record some with `auxcli run SPEC`.")
    if wanted is None:  # no specs named: the workspace's results (what DVC checked out) define each spec
        wanted = workspace_result_ids([anchored("runs")])
    selection = select_records(records, wanted)
    agg = aggregate(selection.kept, only={r.name for r in refs} if refs is not None else None)
    source = ({"source": f"run folders {folders.describe()} (no MLflow store at {display_uri(uri)})"} if folders
              else {"tracking_uri": display_uri(uri), "experiment": experiment})
    source.update(_other_settings_footer(selection.other_settings, refs, listed=all_settings))
    report = build_report(agg, specs=refs, footer=source)
    result = ReportOutput(render(report, fmt), other_settings=len(selection.other_settings))
    if out is not None:
        from auxcli.runfolder import atomic_write_text

        path = out / f"report.{EXTENSIONS[fmt]}"
        atomic_write_text(path, result.text)  # a full disk or read-only --out: OutputError naming the path
        result.written.append(path)
    if plots:
        from auxcli.report.plots import report_figures, save_png

        folder = out if out is not None else Path(DEFAULT_PLOTS_DIR)
        pngs = [save_png(fig, folder / name) for name, fig in report_figures(report, store.histories)]
        result.written += pngs
        if folders:  # nowhere to log the figures
            return result
        with tempfile.TemporaryDirectory() as tmp:
            snapshot = Path(tmp) / "report.json"
            snapshot.write_text(render(report, "json"), encoding="utf-8")
            result.report_run_id = store.log_report(pngs + [snapshot])
    return result


def _other_settings_footer(others, refs, *, listed: bool) -> dict:
    """The footer's count of runs of other settings, and with `listed` each one with its differing fields."""
    if not others:
        return {}
    from auxcli.catalogue import settings_diff

    params = {ref.name: ref.params for ref in refs or ()}
    footer: dict = {"other_settings": len(others)}
    if listed:
        footer["other_settings_runs"] = [
            {"run_id": r.run_id, "run_name": r.run_name, "spec_name": r.spec_name, "status": r.status,
             "differs": settings_diff(params[r.spec_name], r)[:6] if r.spec_name in params else []}
            for r in sorted(others, key=lambda r: (r.spec_name or "", r.seed or 0, r.start_time))]
    return footer


def _run_folders(uri: str, refs):
    """`RunFolders` holding finished runs when `uri` is a local store that does not exist, else None."""
    from auxcli.project import anchored
    from auxcli.report.collect import RunFolders, store_is_missing

    if not store_is_missing(uri):
        return None
    dirs = {ref.params.get("runtime.runs_dir", "runs") for ref in refs} if refs else {"runs"}
    folders = RunFolders([anchored(d) for d in sorted(dirs)])
    return folders if folders else None


def _spec_refs(paths: Sequence[Path], overrides: Sequence[str], need_uri: bool, need_experiment: bool):
    """The named specs as `SpecRef`s, the store and experiment they record to (which must agree unless
    --tracking-uri / --experiment decide), and each spec name's result identity."""
    from auxcli.errors import Problem
    from auxcli.report.tables import SpecRef
    from auxcli.specfile import load_spec, spec_files
    from auxcli.tracking import flatten

    files = spec_files(paths)
    if not files:
        raise SpecError([Problem(", ".join(map(str, paths)), None, None, "", "no spec files found",
                                 "*.yaml files or folders")])
    specs, problems = [], []
    for file in files:
        try:
            specs.append((file, load_spec(file, overrides)))
        except SpecError as exc:
            problems += exc.problems
    if problems:
        raise SpecError(problems)
    uris = {s.tracking.uri for _, s in specs}
    experiments = {s.tracking.experiment for _, s in specs}
    if (need_uri and len(uris) > 1) or (need_experiment and len(experiments) > 1):
        raise TrackingError(
            "the specs record to different stores or experiments "
            f"(tracking.uri: {sorted(map(str, uris))}, tracking.experiment: {sorted(experiments)}); "
            "report them separately or pass --tracking-uri and --experiment.")
    from auxcli.identity import result_id

    refs = [SpecRef(s.name, str(f), {k: str(v) for k, v in flatten(s.to_plain()).items()}) for f, s in specs]
    return refs, uris.pop(), experiments.pop(), {s.name: result_id(s) for _, s in specs}
