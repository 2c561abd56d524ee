"""Every side effect of a run in one object: the run folder and its MLflow run.

The runner's phases compute; `RunRecorder` writes. Keeping the writes here means the order that makes
a run safe to kill is visible in one place (per epoch: MLflow metrics, `history.csv`, then `last.pt`;
at the end: `final.pt`, summary metrics, `metrics.json`, artifacts), and a process that must not write
(a non-zero rank under torchrun) takes a recorder that does nothing instead of `if rank == 0` branches.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Protocol

from auxcli.gitinfo import git_state
from auxcli.runfolder import RunFolder
from auxcli.spec import Spec
from auxcli.specfile import dump_spec
from auxcli.tracking import RunTracker, flatten
from auxcli.train.checkpoint import FINAL_FORMAT, LAST_FORMAT, save_checkpoint


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

    def record_final(self, summary: dict[str, float], final_state: dict[str, Any]) -> None: ...

    def close(self, status: str) -> None: ...


class RunRecorder:
    """The run folder `runs/<name>/seed-<k>/` and one MLflow run for one (spec, seed)."""

    def __init__(self, spec: Spec, seed: int, folder: RunFolder):
        self.spec, self.seed, self.folder = spec, seed, folder
        self.tracker: RunTracker | None = None
        self.run_id: str | None = None

    def open(self, *, resumed_run_id: str | None, history: list[dict[str, float]], tags: dict[str, str],
             clear_folder: bool) -> str | None:
        """Continue the MLflow run of a resumed checkpoint, else start one; then (for --force, only now
        that set-up succeeded) clear the old results and write the resolved spec."""
        spec = self.spec
        tracker = RunTracker(spec.tracking.uri, spec.tracking.experiment)
        self.tracker = tracker
        if resumed_run_id is None or not tracker.resume(resumed_run_id):
            all_tags = {"auxcli.spec_name": spec.name, "auxcli.seed": str(self.seed),
                        "auxcli.spec_sha256": spec_sha256(spec), **git_state().as_tags(), **tags}
            tracker.start(run_label(spec, self.seed), all_tags, flatten(spec.to_plain()))
            for row in history:  # resuming into a store that lost the earlier run: carry its epochs over
                tracker.log_metrics(_epoch_metrics(row), step=int(row["epoch"]))
        self.run_id = tracker.run_id
        if clear_folder:
            self.folder.clear()
        self.folder.write_spec(dump_spec(spec))
        return self.run_id

    def record_epoch(self, epoch: int, row: dict[str, float], history: list[dict[str, float]],
                     resume_state: dict[str, Any]) -> None:
        assert self.tracker is not None
        self.tracker.log_metrics(_epoch_metrics(row), step=epoch)
        self.folder.write_history(history)
        save_checkpoint(self.folder.last, {"format": LAST_FORMAT, **resume_state, "mlflow_run_id": self.run_id,
                                           "spec_sha256": spec_sha256(self.spec)})

    def record_final(self, summary: dict[str, float], final_state: dict[str, Any]) -> None:
        assert self.tracker is not None
        folder = self.folder
        save_checkpoint(folder.final, {"format": FINAL_FORMAT, **final_state, "mlflow_run_id": self.run_id})
        self.tracker.log_metrics(summary, step=self.spec.train.epochs)
        folder.write_metrics({**summary, "mlflow_run_id": self.run_id, "spec_name": self.spec.name,
                              "seed": self.seed})
        self.tracker.log_artifacts([folder.spec, folder.history, folder.metrics])
        self.tracker.log_artifacts([Path(folder.final)], subdir="model")

    def close(self, status: str) -> None:
        if self.tracker is not None:
            self.tracker.end(status)


def _epoch_metrics(row: dict[str, float]) -> dict[str, float]:
    return {key: value for key, value in row.items() if key != "epoch"}
