"""The report's only access to MLflow: runs of one experiment as plain records, metric histories, and the
`auxcli-report` run that holds the report's figures.

It reads the contract written by `auxcli.tracking` (tags `auxcli.*`, params as dotted spec keys, summary
metrics `final_*`), so the report works from the store alone, never from run folders.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from auxcli.errors import TrackingError
from auxcli.tracking import ANALYSIS_TAG, display_uri

REPORT_TAG = "auxcli.report"
REPORT_RUN_NAME = "auxcli-report"
REPORTS_SUFFIX = "-reports"  # report runs live in <experiment>-reports, out of the training runs' charts
PARENT_TAG = "auxcli.parent"  # as auxcli.tracking.PARENT_TAG


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run, reduced to what the report reads."""

    run_id: str
    run_name: str
    status: str  # FINISHED, RUNNING, FAILED, KILLED, SCHEDULED
    spec_name: str | None  # tag auxcli.spec_name
    seed: int | None  # tag auxcli.seed
    start_time: int = 0  # ms since the epoch; orders reruns of one (spec, seed)
    metrics: dict[str, float] = field(default_factory=dict)  # latest values, finite only
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # auxcli.* tags

    @property
    def is_report(self) -> bool:
        """A run auxcli wrote about other runs (`auxcli report`, `auxcli analyze`): in no aggregate."""
        return any(self.tags.get(tag, "").lower() == "true" for tag in (REPORT_TAG, ANALYSIS_TAG))

    @property
    def is_spec_parent(self) -> bool:
        """A spec's parent run (seeds' aggregates, no `auxcli.seed`): never one of the seeds' runs."""
        return self.tags.get(PARENT_TAG, "").lower() == "true"


class Store:
    """An MLflow store and one experiment in it; every failure is a `TrackingError`."""

    def __init__(self, uri: str, experiment: str):
        _check_exists(uri)
        # Fail fast on an unreachable server instead of retrying for minutes (as auxcli.tracking does).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        from mlflow.tracking import MlflowClient

        from auxcli.tracking import _install_sqlite_busy_timeout, check_tracking_uri

        check_tracking_uri(uri)
        _install_sqlite_busy_timeout()
        self.uri, self.experiment = uri, experiment
        self.client = self._call("open", MlflowClient, tracking_uri=uri)
        found = self._call("open", self.client.get_experiment_by_name, experiment)
        if found is None:
            names = sorted(e.name for e in self._call("list experiments", self.client.search_experiments))
            raise TrackingError(
                f"experiment {experiment!r} not found in the MLflow store {display_uri(uri)}; "
                f"experiments there: {', '.join(names) or 'none'}. Pass --experiment NAME "
                "(specs record to tracking.experiment, default 'auxcli')."
            )
        self.experiment_id = found.experiment_id

    def runs(self) -> list[RunRecord]:
        """Every active run of the experiment, report runs included (they carry `is_report`)."""
        from mlflow.entities import ViewType

        records: list[RunRecord] = []
        token = None
        while True:
            page = self._call("search runs", self.client.search_runs, [self.experiment_id],
                              run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
            records += [_record(run) for run in page]
            token = page.token
            if not token:
                return records

    def histories(self, run_ids: list[str], metric: str) -> dict[str, list[tuple[int, float]]]:
        """Per-epoch (step, value) pairs of one metric for each run, sorted by step."""
        out: dict[str, list[tuple[int, float]]] = {}
        for run_id in run_ids:
            points = self._call("read metric history", self.client.get_metric_history, run_id, metric)
            out[run_id] = sorted((p.step, p.value) for p in points if math.isfinite(p.value))
        return out

    def log_report(self, files: list[Path]) -> str:
        """A fresh run `auxcli-report` (tag auxcli.report=true) holding the figures (`figures/`) and
        renderings (`report/`), in the experiment `<experiment>-reports` so that it never shows in the
        training runs' charts and tables; returns its id."""
        from auxcli.signals import end_orphans, process_tags
        from auxcli.testhooks import pause_point
        from auxcli.tracking import ensure_experiment

        experiment_id = self._call("create the reports experiment", ensure_experiment, self.client,
                                   self.experiment + REPORTS_SUFFIX)
        end_orphans(self.client, experiment_id, REPORT_TAG)
        run = self._call("create the report run", self.client.create_run, experiment_id, run_name=REPORT_RUN_NAME,
                         tags={REPORT_TAG: "true", "auxcli.experiment": self.experiment, **process_tags()})
        run_id = run.info.run_id
        status = "FAILED"
        try:
            pause_point("report-run-open")
            for path in files:
                subdir = "figures" if path.suffix == ".png" else "report"
                self._call("log an artifact", self.client.log_artifact, run_id, str(path), subdir)
            status = "FINISHED"
        except KeyboardInterrupt:  # SIGTERM or Ctrl-C (auxcli.signals): KILLED, as `auxcli run` ends its runs
            status = "KILLED"
            raise
        finally:
            self.client.set_terminated(run_id, status=status)
        return run_id

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TrackingError:
            raise
        except Exception as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            raise TrackingError(
                f"MLflow tracking store {display_uri(self.uri)} cannot be used ({what}: "
                f"{type(exc).__name__}: {first}). Check --tracking-uri, tracking.uri in the spec or "
                "MLFLOW_TRACKING_URI; leave them unset for the embedded store in ./mlflow.db."
            ) from None


def _record(run) -> RunRecord:  # run: mlflow.entities.Run
    tags = run.data.tags
    seed = tags.get("auxcli.seed")
    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name or tags.get("mlflow.runName", ""),
        status=run.info.status,
        spec_name=tags.get("auxcli.spec_name"),
        seed=int(seed) if seed is not None and seed.lstrip("-").isdigit() else None,
        start_time=run.info.start_time or 0,
        metrics={k: float(v) for k, v in run.data.metrics.items() if math.isfinite(v)},
        params=dict(run.data.params),
        tags={k: v for k, v in tags.items() if k.startswith("auxcli.")},
    )


def _local_path(uri: str) -> Path | None:
    """The file or folder behind a sqlite/file/plain-path store URI (None for servers and databases)."""
    if uri.startswith("sqlite:"):
        rest = uri[len("sqlite:"):].split("?")[0]
        if not rest.startswith("///"):
            return None  # in-memory or unusual forms: let MLflow judge
        return Path(rest[3:])  # sqlite:////abs -> /abs, sqlite:///rel -> rel (SQLAlchemy's convention)
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if not parts.scheme or len(parts.scheme) == 1:  # plain path, or a Windows drive letter
        return Path(uri)
    return None


def _check_exists(uri: str) -> None:
    """A local store that does not exist yet is empty: say so rather than create one."""
    path = _local_path(uri)
    if path is not None and not path.exists():
        raise TrackingError(
            f"no MLflow store at {path}: nothing has been recorded there yet. Run `auxcli run SPEC` first, "
            "or point --tracking-uri (or MLFLOW_TRACKING_URI) at the store the runs were recorded in."
        )


class RunFolders:
    """The report's source when the MLflow store is not there (a fresh `git clone` + `dvc pull`): the
    finished run folders `<runs_dir>/<name>/seed-<k>/` (`metrics.json`, `spec.resolved.yaml`,
    `history.csv`) read as `RunRecord`s. Same interface as `Store` for reading; it logs nothing."""

    def __init__(self, runs_dirs: list[Path]):
        self.runs_dirs = list(dict.fromkeys(Path(d) for d in runs_dirs))
        self._folders: dict[str, Path] = {}  # run id -> run folder

    def __bool__(self) -> bool:
        return any(self._finished())

    def describe(self) -> str:
        return ", ".join(f"{d}/" for d in self.runs_dirs)

    def _finished(self):
        for runs in self.runs_dirs:
            yield from sorted(runs.glob("*/seed-*/metrics.json"))

    def runs(self) -> list[RunRecord]:
        return [record for path in self._finished() if (record := self._record(path.parent)) is not None]

    def _record(self, folder: Path) -> RunRecord | None:
        import json

        from auxcli.errors import SpecError
        from auxcli.safeyaml import read_yaml_file
        from auxcli.tracking import flatten

        try:
            metrics = json.loads((folder / "metrics.json").read_text())
            spec = read_yaml_file(folder / "spec.resolved.yaml", "resolved spec", "a YAML mapping") or {}
        except (OSError, ValueError, SpecError) as exc:  # a half-copied or damaged folder: named, then skipped
            import logging

            logging.getLogger(__name__).warning("skipped run folder %s: %s", folder, str(exc).splitlines()[0][:300])
            return None
        if not isinstance(metrics, dict) or not isinstance(spec, dict):
            return None
        seed_text = folder.name.removeprefix("seed-")
        seed = int(seed_text) if seed_text.isdigit() else None
        name = str(metrics.get("spec_name") or spec.get("name") or folder.parent.name)
        run_id = str(metrics.get("mlflow_run_id") or folder.as_posix())
        self._folders[run_id] = folder
        return RunRecord(
            run_id=run_id, run_name=f"{name}-s{seed}", status="FINISHED", spec_name=name, seed=seed,
            start_time=int((folder / "metrics.json").stat().st_mtime * 1000),
            metrics={k: float(v) for k, v in metrics.items() if k != "seed"  # a tag in the store, not a metric
                     and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)},
            params={k: str(v) for k, v in flatten(spec).items()},
            tags={"auxcli.spec_name": name, "auxcli.seed": seed_text})

    def histories(self, run_ids: list[str], metric: str) -> dict[str, list[tuple[int, float]]]:
        """Per-epoch (epoch, value) pairs of one column of each run's history.csv."""
        import csv

        out: dict[str, list[tuple[int, float]]] = {}
        for run_id in run_ids:
            path = self._folders.get(run_id, Path(run_id)) / "history.csv"
            points: list[tuple[int, float]] = []
            if path.is_file():
                with open(path, newline="") as f:
                    for row in csv.DictReader(f):
                        try:
                            value = float(row.get(metric) or "nan")
                            epoch = int(float(row["epoch"]))
                        except (KeyError, ValueError, TypeError):  # a damaged row (missing or extra cells)
                            continue
                        if math.isfinite(value):
                            points.append((epoch, value))
            out[run_id] = sorted(points)
        return out


def store_is_missing(uri: str) -> bool:
    """True for a local store (sqlite file, file store, plain path) that does not exist."""
    path = _local_path(uri)
    return path is not None and not path.exists()
