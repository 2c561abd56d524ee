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

import logging
import socket
from pathlib import Path
from typing import Any, Protocol

from auxcli import console
from auxcli.runrecord import RECORD_DIR, write_record
from auxcli.errors import OutputError
from auxcli.gitinfo import git_state
from auxcli.data.identity import DataIdentity, data_identity
from auxcli.lineage import command_line, run_description, source_tags
from auxcli.parentrun import open_spec_parent
from auxcli.runfolder import RunFolder
from auxcli.spec import Spec
from auxcli.specfile import dump_spec
from auxcli.catalogue import mlflow_run_belongs
from auxcli.identity import IDENTITY_TAG, result_id
from auxcli.staleness import spec_sha256
from auxcli.testhooks import pause_point
from auxcli.tracking import RunTracker, flatten, where_message
from auxcli.train.checkpoint import FINAL_FORMAT, LAST_FORMAT, save_checkpoint

RUN_FOLDER_TAG = "auxcli.run_folder"  # host:absolute path; finds this folder's orphaned RUNNING runs
REPAIRED_FROM_TAG = "auxcli.repaired_from"
RESUMED_FROM_TAG = "auxcli.resumed_from"  # a resume into a new MLflow run: the checkpoint's run was gone
_STEP_KEY = "lr"  # a per-epoch metric every run logs: its steps are the epochs MLflow has


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
        self.spec_sha256 = spec_sha256(spec)  # exactly what ran (tag auxcli.spec_sha256)
        self.result_id = result_id(spec)  # the result's identity, in every checkpoint, tag and marker
        self.params = params or {}
        self.tracker: RunTracker | None = None
        self.run_id: str | None = None
        self.parent_run_id: str | None = None
        self.model_id: str | None = None  # the final weights' logged model, once recorded

    def open(self, *, resumed_run_id: str | None, history: list[dict[str, float]], tags: dict[str, str],
             clear_folder: bool) -> str | None:
        """Continue the MLflow run of a resumed checkpoint, else start one; then (for --force, only now
        that set-up succeeded) clear the old results and write the resolved spec."""
        spec = self.spec
        tracker = RunTracker(spec.tracking.uri, spec.tracking.experiment)
        self.tracker = tracker
        self._end_orphans(keep=resumed_run_id)
        if resumed_run_id is None or not self._resume(resumed_run_id):
            # the checkpoint's MLflow run is gone (deleted, another store): resume into a new run, saying so
            self._start(tags if resumed_run_id is None else {**tags, RESUMED_FROM_TAG: resumed_run_id})
        self._log_missing_epochs(history)
        if spec.runtime.system_metrics:
            tracker.start_system_metrics()
        if clear_folder:
            self.folder.clear()
        self.folder.write_spec(dump_spec(spec))
        return self.run_id

    def _start(self, tags: dict[str, str]) -> None:
        """A new MLflow run for the seed, nested under the spec's parent run, with MLflow's standard
        tags, the description, the dataset input and, for a transfer, the source's model as input."""
        assert self.tracker is not None
        spec, tracker = self.spec, self.tracker
        git, command, sha = git_state(), command_line(), self.spec_sha256
        standard = source_tags(git, command)
        params = flatten(spec.to_plain())
        self.parent_run_id = self._open_parent(git, command)
        all_tags = {"auxcli.spec_name": spec.name, "auxcli.seed": str(self.seed),
                    "auxcli.spec_sha256": sha, IDENTITY_TAG: self.result_id, RUN_FOLDER_TAG: self._folder_tag(),
                    **git.as_tags(), **standard,
                    **tags}
        self.run_id = tracker.start(run_label(spec, self.seed), all_tags, {**params, **self.params},
                                    parent_run_id=self.parent_run_id)
        data = _data_identity(spec)
        if data is not None:  # MLflow shows 12 digits of a dataset digest; the profile has the rest
            tracker.log_dataset(data.name, data.short_digest, str(data.folder.resolve()), profile={
                "sha256": data.digest, "files_md5": data.files, "subset_per_class": spec.data.subset,
                "dvc_path": data.dvc_path, "dvc_md5": data.dvc_md5})
        source_link = self._link_transfer_source(tags.get("auxcli.transfer.source_run_id"))
        tracker.describe(run_description(spec, self.seed, command=command, git=git, data=data,
                                         spec_text=dump_spec(spec), source_link=source_link))

    def record_epoch(self, epoch: int, row: dict[str, float], history: list[dict[str, float]],
                     resume_state: dict[str, Any]) -> None:
        assert self.tracker is not None
        self.folder.write_history(history)
        save_checkpoint(self.folder.last, {"format": LAST_FORMAT, **resume_state, "mlflow_run_id": self.run_id,
                                           "spec_sha256": self.spec_sha256, "result_id": self.result_id})
        pause_point("after-checkpoint")
        self.tracker.log_metrics(_epoch_metrics(row), step=epoch)

    def record_final(self, summary: dict[str, float], final_state: dict[str, Any],
                     record: dict[str, bytes] | None = None) -> None:
        """`final.pt`, summary metrics, the `repro/` record (`auxcli.runrecord`), then `metrics.json`
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
        self._log_model(summary)

    def repair(self) -> str | None:
        """Finish the MLflow record of a run whose training finished (`metrics.json`) without retraining:
        into its own MLflow run when the store still has it, else into a new run tagged
        `auxcli.repaired_from`. The caller closes the run (`close("FINISHED")` writes the marker)."""
        folder = self.folder
        try:
            metrics = folder.read_metrics()
            history = folder.read_history()
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
        self._log_model(summary)
        return self.run_id

    # ------------------------------------------------------------------------------------------ helpers

    def _open_parent(self, git=None, command: str | None = None) -> str:
        """The spec's parent run: found, or created with the spec's tags, params and description."""
        assert self.tracker is not None
        return open_spec_parent(self.tracker, self.spec, git=git, command=command)

    def _live_parent(self) -> str:
        """The parent run to aggregate into. Seeds started at once may each create a parent; all but the
        oldest visible one are deleted, and a slow store can make a seed see its own as the oldest before
        an older one appears. A seed whose parent was deleted (by that, or in the UI) moves under the
        spec's live parent, creating one if none is left."""
        assert self.tracker is not None and self.parent_run_id is not None and self.run_id is not None
        if self.tracker.is_live(self.parent_run_id):
            return self.parent_run_id
        live = self.tracker.spec_parents(self.spec.name, self.result_id)
        parent = live[0] if live else self._open_parent()
        self.tracker.move_under(self.run_id, parent)
        return parent

    def _resume(self, run_id: str) -> bool:
        """Continue `run_id` (or its copy, once `auxcli migrate` moved it to this store) if the store has it
        and it belongs to this resolved spec."""
        assert self.tracker is not None
        current = self.tracker.current_id(run_id)
        if current is None:  # deleted, or another store
            return False
        run_id = current
        run = self.tracker.client.get_run(run_id)
        if run.info.lifecycle_stage != "active":  # deleted in the UI: it cannot be written to again
            return False
        if not mlflow_run_belongs(self.spec, run.data.tags, self.folder):
            return False
        if not self.tracker.resume(run_id):
            return False
        self.run_id = run_id
        self.parent_run_id = run.data.tags.get("mlflow.parentRunId")
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

    def _log_model(self, summary: dict[str, float]) -> None:
        """The final weights as a logged model ("Models" in the UI, `models:/<id>` for the registry);
        once per run: a repair of a run that logged it already leaves it."""
        assert self.tracker is not None and self.run_id is not None
        run = self.tracker.client.get_run(self.run_id)
        if run.outputs and run.outputs.model_outputs:
            self.model_id = run.outputs.model_outputs[0].model_id
            return
        folder = self.folder
        self.model_id = self.tracker.log_model(self.spec.name, [folder.final, folder.spec], summary,
                                               step=self.spec.train.epochs, classifier=_classifier(folder.final))

    def close(self, status: str) -> None:
        """End the MLflow run (and, for the spec's parent, aggregate or mark why not); after FINISHED,
        write the completion marker: the last write of a run."""
        if self.tracker is None:
            return
        self.tracker.end(status)
        if self.parent_run_id is not None:
            self.parent_run_id = self._live_parent()
            if status == "FINISHED":
                self.tracker.update_parent(self.parent_run_id, self.spec.seeds)
            else:  # the spec is not complete: the parent says why
                self.tracker.client.set_terminated(self.parent_run_id, status=status)
        if status == "FINISHED" and self.folder.metrics.exists():  # not a run stopped early (reproduce)
            pause_point("before-marker")
            self.folder.write_completion({"mlflow_run_id": self.run_id, "spec_sha256": self.spec_sha256,
                                          "result_id": self.result_id,
                                          "spec_name": self.spec.name, "seed": self.seed})
        if status == "FINISHED" and self.run_id is not None:
            console.result(where_message(self.tracker, run_label(self.spec, self.seed), self.folder.root,
                                         self.run_id))

    def _link_transfer_source(self, source_run_id: str | None) -> str | None:
        """A markdown link to the transfer's source run, whose logged model becomes this run's input."""
        if not source_run_id or source_run_id in ("none", "unknown") or self.tracker is None:
            return None
        try:
            source = self.tracker.client.get_run(source_run_id)
        except Exception:  # a source recorded in another store: the tags still name it
            return None
        for output in source.outputs.model_outputs if source.outputs else []:
            self.tracker.log_model_input(output.model_id)
        name = source.info.run_name or source_run_id
        return f"[{name}](#/experiments/{source.info.experiment_id}/runs/{source_run_id})"


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


def _data_identity(spec: Spec) -> DataIdentity | None:
    """The data set's identity for the dataset input; None (and a warning) if its files cannot say."""
    from auxcli.errors import DataError

    try:
        return data_identity(spec.data)
    except (OSError, KeyError, ValueError, DataError) as exc:
        logging.getLogger(__name__).warning("no dataset input recorded: %s", exc)
        return None


def _classifier(final: Path) -> Any:
    """`final.pt` as an `ImageClassifier` for the logged model's pytorch flavour, or None (nothing to
    export, or a rebuild that fails: the record goes on without the flavour, with a warning)."""
    from auxcli.models.export import image_classifier
    from auxcli.train.checkpoint import load_checkpoint

    try:
        return image_classifier(load_checkpoint(final, FINAL_FORMAT))
    except Exception as exc:
        logging.getLogger(__name__).warning("the logged model has no pytorch flavour (%s: %s)",
                                            type(exc).__name__, exc)
        return None
