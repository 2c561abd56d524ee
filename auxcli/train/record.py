"""Every side effect of a run in one object: the run folder and its MLflow run.

The runner's phases compute; `RunRecorder` writes. Keeping the writes here means the order that makes
a run safe to kill is visible in one place, and a process that must not write (a non-zero rank under
torchrun) takes a recorder that does nothing instead of `if rank == 0` branches. The order (issue 9):

- per epoch: `history.csv`, `last.pt`, then the epoch's MLflow metrics. A kill before the metrics are
  logged loses nothing: on resume, `open` logs every epoch of `last.pt`'s history that MLflow lacks, so
  each epoch is in MLflow exactly once (logging first would log an epoch twice after a resume);
- at the end, two phases: `final.pt`, summary metrics, `metrics.json` (training finished), the
  artifacts, the MLflow run closed FINISHED, and only then `complete.json`, the completion marker.
  A folder with `metrics.json` but no marker is `incomplete`: `repair` finishes its MLflow record
  (into the same run, or a new one tagged `auxcli.repaired_from`) without retraining;
- on every start, MLflow runs of this run folder still RUNNING (their process was SIGKILLed; the
  folder lock proves nobody else runs it) are marked KILLED, so every ended run has a terminal state.
"""

from __future__ import annotations

import csv
import hashlib
import socket
from pathlib import Path
from typing import Any, Protocol

from auxcli.bundle.record import RECORD_DIR, write_record
from auxcli.errors import OutputError
from auxcli.gitinfo import git_state
from auxcli.runfolder import RunFolder
from auxcli.spec import Spec
from auxcli.specfile import dump_spec
from auxcli.tracking import RunTracker, flatten
from auxcli.testhooks import pause_point
from auxcli.train.checkpoint import FINAL_FORMAT, LAST_FORMAT, save_checkpoint

RUN_FOLDER_TAG = "auxcli.run_folder"  # host:absolute path; finds this folder's orphaned RUNNING runs
REPAIRED_FROM_TAG = "auxcli.repaired_from"
_STEP_KEY = "lr"  # a per-epoch metric every run logs: its steps are the epochs MLflow has


def spec_sha256(spec: Spec) -> str:
    return hashlib.sha256(dump_spec(spec).encode()).hexdigest()


def run_label(spec: Spec, seed: int) -> str:
    """The MLflow run name of one seed, `<name>-s<seed>` (a contract: the report reads it)."""
    return f"{spec.name}-s{seed}"


class Recorder(Protocol):
    run_id: str | None

    def open(self, *, resumed_run_id: str | None, history: list[dict[str, float]], tags: dict[str, str],
             clear_folder: bool) -> str | None: ...

    def record_epoch(self, epoch: int, row: dict[str, float], history: list[dict[str, float]],
                     resume_state: dict[str, Any]) -> None: ...

    def record_final(self, summary: dict[str, float], final_state: dict[str, Any],
                     record: dict[str, bytes] | None = None) -> None: ...

    def close(self, status: str) -> None: ...


class RunRecorder:
    """The run folder `runs/<name>/seed-<k>/` and one MLflow run for one (spec, seed)."""

    def __init__(self, spec: Spec, seed: int, folder: RunFolder, params: dict[str, str] | None = None):
        """`params`: recorded beside the flattened spec when the MLflow run starts (the resolved runtime)."""
        self.spec, self.seed, self.folder = spec, seed, folder
        self.params = params or {}
        self.tracker: RunTracker | None = None
        self.run_id: str | None = None

    def open(self, *, resumed_run_id: str | None, history: list[dict[str, float]], tags: dict[str, str],
             clear_folder: bool) -> str | None:
        """Continue the MLflow run of a resumed checkpoint, else start one; then (for --force, only now
        that set-up succeeded) clear the old results and write the resolved spec."""
        spec = self.spec
        tracker = RunTracker(spec.tracking.uri, spec.tracking.experiment)
        self.tracker = tracker
        self._end_orphans(keep=resumed_run_id)
        if resumed_run_id is None or not self._resume(resumed_run_id):
            self._start(tags)
        self._log_missing_epochs(history)
        if clear_folder:
            self.folder.clear()
        self.folder.write_spec(dump_spec(spec))
        return self.run_id

    def record_epoch(self, epoch: int, row: dict[str, float], history: list[dict[str, float]],
                     resume_state: dict[str, Any]) -> None:
        assert self.tracker is not None
        self.folder.write_history(history)
        save_checkpoint(self.folder.last, {"format": LAST_FORMAT, **resume_state, "mlflow_run_id": self.run_id,
                                           "spec_sha256": spec_sha256(self.spec)})
        pause_point("after-checkpoint")
        self.tracker.log_metrics(_epoch_metrics(row), step=epoch)

    def record_final(self, summary: dict[str, float], final_state: dict[str, Any],
                     record: dict[str, bytes] | None = None) -> None:
        """`final.pt`, summary metrics, the `repro/` record (`auxcli.bundle.record`), then `metrics.json`
        (its presence means finished) and the artifacts, the record as the artifact folder `repro/`."""
        assert self.tracker is not None
        folder = self.folder
        save_checkpoint(folder.final, {"format": FINAL_FORMAT, **final_state, "mlflow_run_id": self.run_id})
        self.tracker.log_metrics(summary, step=self.spec.train.epochs)
        if record is not None:
            write_record(folder.repro, record)
        folder.write_metrics({**summary, "mlflow_run_id": self.run_id, "spec_name": self.spec.name,
                              "seed": self.seed})
        pause_point("after-metrics")
        self._log_artifacts()

    def repair(self) -> str | None:
        """Finish the MLflow record of a run whose training finished (`metrics.json`) without retraining:
        into its own MLflow run when the store still has it, else into a new run tagged
        `auxcli.repaired_from`. The caller closes the run (`close("FINISHED")` writes the marker)."""
        folder = self.folder
        try:
            metrics = folder.read_metrics()
            history = _read_history(folder.history)
        except (OSError, ValueError) as exc:
            raise OutputError(f"{folder.root}: training finished but its record cannot be completed "
                              f"({exc}); re-run with --force to train it again.") from None
        if not folder.final.is_file():
            raise OutputError(f"{folder.root}: training finished but final.pt is missing, so its record cannot "
                              "be completed; re-run with --force to train it again.")
        summary = {k: float(v) for k, v in metrics.items() if k not in ("mlflow_run_id", "spec_name", "seed")}
        self.tracker = RunTracker(self.spec.tracking.uri, self.spec.tracking.experiment)
        old_id = metrics.get("mlflow_run_id")
        self._end_orphans(keep=old_id)
        if not (isinstance(old_id, str) and self._resume(old_id)):
            self._start({REPAIRED_FROM_TAG: str(old_id or "none")})
        self._log_missing_epochs(history)
        logged = self.tracker.client.get_run(self.run_id).data.metrics
        missing = {k: v for k, v in summary.items() if k not in logged}
        if missing:
            self.tracker.log_metrics(missing, step=self.spec.train.epochs)
        if old_id != self.run_id:
            folder.write_metrics({**metrics, "mlflow_run_id": self.run_id})
        self._log_artifacts()
        return self.run_id

    # ------------------------------------------------------------------------------------------ helpers

    def _start(self, tags: dict[str, str]) -> None:
        assert self.tracker is not None
        spec = self.spec
        all_tags = {"auxcli.spec_name": spec.name, "auxcli.seed": str(self.seed),
                    "auxcli.spec_sha256": spec_sha256(spec), RUN_FOLDER_TAG: self._folder_tag(),
                    **git_state().as_tags(), **tags}
        self.run_id = self.tracker.start(run_label(spec, self.seed), all_tags,
                                         {**flatten(spec.to_plain()), **self.params})

    def _resume(self, run_id: str) -> bool:
        """Continue `run_id` if the store has it and it belongs to this resolved spec."""
        assert self.tracker is not None
        try:
            run = self.tracker.client.get_run(run_id)
        except Exception:  # deleted, or another store
            return False
        if run.data.tags.get("auxcli.spec_sha256") != spec_sha256(self.spec):
            return False
        if not self.tracker.resume(run_id):
            return False
        self.run_id = run_id
        return True

    def _log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """Log the epochs of `history` that the MLflow run lacks (all of them for a new run)."""
        assert self.tracker is not None
        if not history:
            return
        logged = {m.step for m in self.tracker.client.get_metric_history(self.run_id, _STEP_KEY)}
        for row in history:
            if int(row["epoch"]) not in logged:
                self.tracker.log_metrics(_epoch_metrics(row), step=int(row["epoch"]))

    def _end_orphans(self, keep: str | None) -> None:
        """Mark KILLED the RUNNING MLflow runs of this run folder whose process died (we hold its lock)."""
        assert self.tracker is not None
        client, spec = self.tracker.client, self.spec
        runs = client.search_runs(
            [self.tracker.experiment_id], max_results=200,
            filter_string=f"tags.`auxcli.spec_name` = '{spec.name}' and tags.`auxcli.seed` = '{self.seed}' "
                          "and attributes.status = 'RUNNING'")
        for run in runs:
            if run.info.run_id != keep and run.data.tags.get(RUN_FOLDER_TAG) == self._folder_tag():
                client.set_terminated(run.info.run_id, status="KILLED")

    def _folder_tag(self) -> str:
        return f"{socket.gethostname()}:{self.folder.root.resolve()}"

    def _log_artifacts(self) -> None:
        assert self.tracker is not None
        folder = self.folder
        self.tracker.log_artifacts([folder.spec])
        pause_point("during-artifacts")
        self.tracker.log_artifacts([folder.history, folder.metrics])
        self.tracker.log_artifacts([Path(folder.final)], subdir="model")
        # the repro/ record as written (a repair re-logs it too); one call per file: spec/ files keep their folder
        files = sorted(p for p in folder.repro.rglob("*") if p.is_file()) if folder.repro.is_dir() else []
        for path in files:
            name = path.relative_to(folder.repro).as_posix()
            self.tracker.log_artifacts([path], subdir=Path(RECORD_DIR, name).parent.as_posix())

    def close(self, status: str) -> None:
        """End the MLflow run with `status`; after FINISHED, write the completion marker (the last write)."""
        if self.tracker is not None:
            self.tracker.end(status)
            if status == "FINISHED" and self.folder.metrics.exists():  # not a run stopped early (reproduce)
                pause_point("before-marker")
                self.folder.write_completion({"mlflow_run_id": self.run_id, "spec_sha256": spec_sha256(self.spec),
                                              "spec_name": self.spec.name, "seed": self.seed})


class NoRecorder:
    """The recorder of a torchrun rank other than 0: writes nothing; `run_id` is set to rank 0's."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def open(self, *, resumed_run_id: str | None, history: list[dict[str, float]], tags: dict[str, str],
             clear_folder: bool) -> str | None:
        return None

    def record_epoch(self, epoch: int, row: dict[str, float], history: list[dict[str, float]],
                     resume_state: dict[str, Any]) -> None:
        pass

    def record_final(self, summary: dict[str, float], final_state: dict[str, Any],
                     record: dict[str, bytes] | None = None) -> None:
        pass

    def close(self, status: str) -> None:
        pass


def _epoch_metrics(row: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in row.items() if key != "epoch"}


def _read_history(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
