"""Every side effect of a run in one object: the run folder and its MLflow run.

The runner's phases compute; `RunRecorder` writes. Keeping the writes here means the order that makes
a run safe to kill is visible in one place (per epoch: MLflow metrics, `history.csv`, then `last.pt`;
at the end: `final.pt`, summary metrics, `metrics.json`, artifacts), and a process that must not write
(a non-zero rank under torchrun) takes a recorder that does nothing instead of `if rank == 0` branches.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Protocol

from auxcli import console
from auxcli.bundle.record import RECORD_DIR, write_record
from auxcli.gitinfo import git_state
from auxcli.data.identity import DataIdentity, data_identity
from auxcli.lineage import command_line, parent_description, run_description, source_tags
from auxcli.runfolder import RunFolder
from auxcli.spec import Spec
from auxcli.specfile import dump_spec
from auxcli.tracking import RunTracker, flatten, where_message
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
        self.parent_run_id: str | None = None
        self.model_id: str | None = None  # the final weights' logged model, once recorded

    def open(self, *, resumed_run_id: str | None, history: list[dict[str, float]], tags: dict[str, str],
             clear_folder: bool) -> str | None:
        """Continue the MLflow run of a resumed checkpoint, else start one; then (for --force, only now
        that set-up succeeded) clear the old results and write the resolved spec."""
        spec = self.spec
        tracker = RunTracker(spec.tracking.uri, spec.tracking.experiment)
        self.tracker = tracker
        if resumed_run_id is not None and tracker.resume(resumed_run_id):
            self.parent_run_id = tracker.client.get_run(resumed_run_id).data.tags.get("mlflow.parentRunId")
        else:
            self._start(history, tags)
        if spec.runtime.system_metrics:
            tracker.start_system_metrics()
        self.run_id = tracker.run_id
        if clear_folder:
            self.folder.clear()
        self.folder.write_spec(dump_spec(spec))
        return self.run_id

    def _start(self, history: list[dict[str, float]], tags: dict[str, str]) -> None:
        """A new MLflow run for the seed, nested under the spec's parent run, with MLflow's standard
        tags, the description, the dataset input and, for a transfer, the source's model as input."""
        assert self.tracker is not None
        spec, tracker = self.spec, self.tracker
        git, command, sha = git_state(), command_line(), spec_sha256(spec)
        standard = source_tags(git, command)
        params = flatten(spec.to_plain())
        self.parent_run_id = tracker.spec_parent(
            spec.name, sha, {**standard, **git.as_tags()}, params,
            description=parent_description(spec, command=command, spec_text=dump_spec(spec)))
        all_tags = {"auxcli.spec_name": spec.name, "auxcli.seed": str(self.seed),
                    "auxcli.spec_sha256": sha, **git.as_tags(), **standard, **tags}
        tracker.start(run_label(spec, self.seed), all_tags, {**params, **self.params},
                      parent_run_id=self.parent_run_id)
        for row in history:  # resuming into a store that lost the earlier run: carry its epochs over
            tracker.log_metrics(_epoch_metrics(row), step=int(row["epoch"]))
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
        self.tracker.log_metrics(_epoch_metrics(row), step=epoch)
        self.folder.write_history(history)
        save_checkpoint(self.folder.last, {"format": LAST_FORMAT, **resume_state, "mlflow_run_id": self.run_id,
                                           "spec_sha256": spec_sha256(self.spec)})

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
        self.tracker.log_artifacts([folder.spec, folder.history, folder.metrics])
        self.tracker.log_artifacts([Path(folder.final)], subdir="model")
        for name in record or {}:  # one call per file: the record's spec/ files keep their sub-folder
            self.tracker.log_artifacts([folder.repro / name], subdir=Path(RECORD_DIR, name).parent.as_posix())
        # The final weights as a logged model ("Models" in the UI, `models:/<id>` for the registry).
        self.model_id = self.tracker.log_model(self.spec.name, [folder.final, folder.spec], summary,
                                               step=self.spec.train.epochs)

    def close(self, status: str) -> None:
        if self.tracker is None:
            return
        self.tracker.end(status)
        if self.parent_run_id is not None:
            if status == "FINISHED":
                self.tracker.update_parent(self.parent_run_id, self.spec.seeds)
            else:  # the spec is not complete: the parent says why
                self.tracker.client.set_terminated(self.parent_run_id, status=status)
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
