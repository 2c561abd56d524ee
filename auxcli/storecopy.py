"""Copy every run of one MLflow store into another, losing nothing: the MLflow half of `auxcli migrate`.

This module belongs to `auxcli.tracking` (the only other one that calls MLflow); `auxcli.migrate` decides
what to copy and rewrites the run folders, this one only reads the source and writes the target.

Why not MLflow's own mlflow-export-import: its PyPI release (1.2.0, January 2023) predates MLflow 3 and
copies no logged models or dataset inputs; its GitHub master (no release since) adds them, but still
creates each run "now" (start and end times lost), imports a logged model once per run that names it
(a transfer's model input would be a second copy), fails on model inputs (`run.info_run_id`), and
re-imports duplicates when run twice. auxcli's references (checkpoints, run folders, transfer links)
need a run id map it does not return. So the copy is done here through `MlflowClient`, per run:

- experiment by name (created with the target's own artifact root), its tags;
- run name, start and end time, status, user, every tag (run ids and experiment ids inside values,
  `mlflow.parentRunId` and `auxcli.transfer.source_run_id` among them, remapped to the copies), every
  param, every metric's whole history (value, step, timestamp; `system/*` included), dataset inputs,
  every artifact byte for byte;
- logged models (name, type, tags, params, status, artifacts, metrics linked to them) as the run's
  outputs, each tagged `auxcli.migrated_from` with its source model id, and the models a run started
  from as its model inputs, pointing at the copies.

Not copyable through MLflow's API: run, experiment and model ids (the store assigns them) and a logged
model's creation time. Deleted runs and experiments stay behind.

A copy is safe to interrupt: a run gets `auxcli.migrating_from` when created and `auxcli.migrated_from`
(`MIGRATED_FROM_TAG`) only once complete; a re-run skips complete copies, deletes half-made ones (and
their logged models) and copies those again, so two migrations of one store never duplicate a run.
The source store is only read.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from auxcli.tracking import MIGRATED_FROM_TAG, default_artifact_location

COPYING_TAG = "auxcli.migrating_from"  # a run being copied: without MIGRATED_FROM_TAG it is a leftover
MIGRATED_STORE_TAG = "auxcli.migrated_from_store"  # the store it came from (display form, no password)
_PAGE = 1000  # search_runs' and search_experiments' largest page
_RUN_ID_TOKEN = re.compile(r"\b[0-9a-f]{32}\b")
_EXPERIMENT_LINK = re.compile(r"(#/experiments/)(\d+)")  # links in descriptions (mlflow.note.content)


@dataclass
class CopyResult:
    run_ids: dict[str, str] = field(default_factory=dict)  # source run id -> target run id, every run
    copied: list[str] = field(default_factory=list)  # source ids copied by this call
    already: list[str] = field(default_factory=list)  # source ids a previous migration copied
    leftovers_removed: int = 0  # half-made copies of an interrupted migration, deleted and made again


def copy_store(source: Any, target: Any, *, source_uri: str, target_uri: str, source_label: str,
               progress: Callable[[str], object] = lambda _: None) -> CopyResult:
    """Copy every active run of every active experiment of `source` (an MlflowClient) into `target`."""
    return _StoreCopy(source, target, source_uri, target_uri, source_label, progress).run()


def open_store(uri: str, role: str) -> Any:
    """An MlflowClient on `uri` that has answered one query, or a `TrackingError` naming the store."""
    from auxcli.errors import TrackingError
    from auxcli.tracking import display_uri, open_client

    try:
        client = open_client(uri)
        client.search_experiments(max_results=1)
        return client
    except TrackingError:
        raise
    except Exception as exc:  # MLflow raises many types for bad URIs and unreachable servers
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise TrackingError(
            f"the {role} store {display_uri(uri)} cannot be used ({type(exc).__name__}: {first}). "
            "Nothing was copied and the run folders are unchanged. Allowed: a reachable tracking server "
            "(http://host:5000), a database URI (postgresql+psycopg2://user@host/db) or a sqlite:/// file.") from None


class _StoreCopy:
    def __init__(self, source: Any, target: Any, source_uri: str, target_uri: str, source_label: str,
                 progress: Callable[[str], object]):
        self.source, self.target = source, target
        self.source_uri, self.target_uri, self.source_label = source_uri, target_uri, source_label
        self.progress = progress
        self.result = CopyResult()
        self.experiments: dict[str, str] = {}  # source experiment id -> target experiment id
        self.models: dict[str, str] = {}  # source model id -> target model id
        self.runs: dict[str, Any] = {}  # source run id -> source Run
        self.models_of: dict[str, list[Any]] = {}  # source run id -> its logged models
        self._visiting: set[str] = set()

    def run(self) -> CopyResult:
        for experiment in _pages(lambda token: self.source.search_experiments(max_results=_PAGE, page_token=token)):
            source_id = experiment.experiment_id
            self.experiments[source_id] = self._target_experiment(experiment)
            for run in _pages(lambda token, ids=[source_id]: self.source.search_runs(
                    ids, max_results=_PAGE, page_token=token)):
                self.runs[run.info.run_id] = run
            for model in _pages(lambda token, ids=[source_id]: self.source.search_logged_models(
                    ids, max_results=100, page_token=token)):
                if model.source_run_id:
                    self.models_of.setdefault(model.source_run_id, []).append(model)
        self._find_earlier_copies()
        for run in sorted(self.runs.values(), key=lambda r: (r.info.start_time or 0, r.info.run_id)):
            self._copy(run)
        return self.result

    # ------------------------------------------------------------------------------------------ experiments

    def _target_experiment(self, experiment: Any) -> str:
        found = self.target.get_experiment_by_name(experiment.name)
        if found is None:
            experiment_id = self.target.create_experiment(
                experiment.name, artifact_location=default_artifact_location(experiment.name, self.target_uri))
            found = self.target.get_experiment(experiment_id)
        for key, value in experiment.tags.items():
            if key not in found.tags:  # an experiment the target already had keeps its own tags
                self.target.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id

    # ------------------------------------------------------------------------------------------ idempotence

    def _find_earlier_copies(self) -> None:
        """Runs copied by an earlier migration are mapped, not copied again; half-made ones are deleted."""
        ids = sorted(set(self.experiments.values()))
        if not ids:
            return
        done = _pages(lambda token: self.target.search_runs(
            ids, filter_string=f"tags.`{MIGRATED_FROM_TAG}` LIKE '%'", max_results=_PAGE, page_token=token))
        for run in done:
            self.result.run_ids[run.data.tags[MIGRATED_FROM_TAG]] = run.info.run_id
            for output in (run.outputs.model_outputs if run.outputs else []):
                source_model = self.target.get_logged_model(output.model_id).tags.get(MIGRATED_FROM_TAG)
                if source_model:
                    self.models[source_model] = output.model_id
        self.result.already = [old for old in self.result.run_ids if old in self.runs]
        started = _pages(lambda token: self.target.search_runs(
            ids, filter_string=f"tags.`{COPYING_TAG}` LIKE '%'", max_results=_PAGE, page_token=token))
        leftovers = {run.info.run_id for run in started if MIGRATED_FROM_TAG not in run.data.tags}
        if leftovers:
            for model in _pages(lambda token: self.target.search_logged_models(ids, max_results=100,
                                                                                page_token=token)):
                if model.source_run_id in leftovers:
                    self.target.delete_logged_model(model.model_id)
            for run_id in leftovers:
                self.target.delete_run(run_id)
        self.result.leftovers_removed = len(leftovers)

    # ------------------------------------------------------------------------------------------ one run

    def _copy(self, run: Any) -> None:
        old = run.info.run_id
        if old in self.result.run_ids or old in self._visiting:
            return
        self._visiting.add(old)
        run = self.source.get_run(old)  # whole: search results leave out model inputs
        for dependency in self._dependencies(run):  # parents, transfer sources, inputs: copied first, so
            self._copy(self.runs[dependency])        # the references below can name their copies
        self.progress(f"copying {run.info.run_name or old} ({old})")
        tags = {key: self._remap(value) for key, value in run.data.tags.items()}
        new = self.target.create_run(self.experiments[run.info.experiment_id], start_time=run.info.start_time,
                                     tags={**tags, COPYING_TAG: old}, run_name=run.info.run_name).info.run_id
        from mlflow.entities import DatasetInput, LoggedModelInput, LoggedModelOutput, Param

        params = [Param(k, v) for k, v in run.data.params.items()]
        for start in range(0, len(params), 100):  # the store's limit per call
            self.target.log_batch(new, params=params[start:start + 100])
        if run.inputs and run.inputs.dataset_inputs:
            self.target.log_inputs(new, datasets=[DatasetInput(d.dataset, d.tags) for d in run.inputs.dataset_inputs])
        linked = self._copy_models(run, new)
        self._copy_metrics(run, new, linked)
        if run.outputs and run.outputs.model_outputs:
            self.target.log_outputs(new, [LoggedModelOutput(self.models[o.model_id], o.step)
                                          for o in run.outputs.model_outputs if o.model_id in self.models])
        model_inputs = [LoggedModelInput(self.models[m.model_id])
                        for m in (run.inputs.model_inputs if run.inputs else []) if m.model_id in self.models]
        if model_inputs:
            self.target.log_inputs(new, models=model_inputs)
        self._copy_artifacts(old, new)
        if run.info.status != "RUNNING":
            self.target.set_terminated(new, status=run.info.status, end_time=run.info.end_time)
        # complete: only now does the copy count (a re-run skips it), and the temporary tag goes
        self.target.set_tag(new, MIGRATED_STORE_TAG, self.source_label)
        self.target.set_tag(new, MIGRATED_FROM_TAG, old)
        self.target.delete_tag(new, COPYING_TAG)
        self.result.run_ids[old] = new
        self.result.copied.append(old)

    def _dependencies(self, run: Any) -> list[str]:
        named = {token for value in run.data.tags.values() for token in _RUN_ID_TOKEN.findall(value)}
        for model_input in (run.inputs.model_inputs if run.inputs else []):
            named.add(self._model_source(model_input.model_id) or "")
        return sorted(i for i in named if i in self.runs and i != run.info.run_id)

    def _model_source(self, model_id: str) -> str | None:
        for run_id, models in self.models_of.items():
            if any(m.model_id == model_id for m in models):
                return run_id
        return None

    def _remap(self, value: str) -> str:
        value = _RUN_ID_TOKEN.sub(lambda m: self.result.run_ids.get(m.group(0), m.group(0)), value)
        return _EXPERIMENT_LINK.sub(lambda m: m.group(1) + self.experiments.get(m.group(2), m.group(2)), value)

    def _copy_models(self, run: Any, new_run: str) -> set[tuple[str, float, int, int]]:
        """The run's logged models with their artifacts; returns the metric points linked to them."""
        linked: set[tuple[str, float, int, int]] = set()
        for model in self.models_of.get(run.info.run_id, []):
            copy = self.target.create_logged_model(
                self.experiments[run.info.experiment_id], name=model.name, source_run_id=new_run,
                tags={**{k: self._remap(v) for k, v in model.tags.items()}, MIGRATED_FROM_TAG: model.model_id},
                params=model.params, model_type=model.model_type)
            with tempfile.TemporaryDirectory() as tmp:
                from mlflow.artifacts import download_artifacts

                local = download_artifacts(artifact_uri=model.artifact_location, dst_path=tmp,
                                           tracking_uri=self.source_uri)
                self.target.log_model_artifacts(copy.model_id, local)
            from mlflow.entities import Metric

            points = [m for m in (model.metrics or []) if m.run_id in (None, run.info.run_id)]
            for start in range(0, len(points), _PAGE):
                self.target.log_batch(new_run, metrics=[Metric(m.key, m.value, m.timestamp, m.step,
                                                               model_id=copy.model_id)
                                                        for m in points[start:start + _PAGE]])
            linked |= {(m.key, m.value, m.timestamp, m.step) for m in points}
            status = str(model.status)
            if status.endswith(("READY", "FAILED")):
                self.target.finalize_logged_model(copy.model_id, "READY" if status.endswith("READY") else "FAILED")
            self.models[model.model_id] = copy.model_id
        return linked

    def _copy_metrics(self, run: Any, new_run: str, linked: set[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        points = [Metric(m.key, m.value, m.timestamp, m.step)
                  for key in run.data.metrics
                  for m in self.source.get_metric_history(run.info.run_id, key)
                  if (m.key, m.value, m.timestamp, m.step) not in linked]  # logged with their model above
        for start in range(0, len(points), _PAGE):
            self.target.log_batch(new_run, metrics=points[start:start + _PAGE])

    def _copy_artifacts(self, old: str, new: str) -> None:
        if not self.source.list_artifacts(old):
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = self.source.download_artifacts(old, "", tmp)
            self.target.log_artifacts(new, local)


def _pages(search: Callable[[str | None], Any]) -> Iterator[Any]:
    """Every item of a paged MLflow search."""
    token = None
    while True:
        page = search(token)
        yield from page
        token = getattr(page, "token", None)
        if not token:
            return
