"""The only module that talks to MLflow while training: store resolution, one run per seed, logging.

The MLflow contract (the report, the DVC pipeline and users' queries read it):
- store: `tracking.uri`, else `MLFLOW_TRACKING_URI`, else the embedded default
  `sqlite:///<root>/mlflow.db` with artifacts in `<root>/mlartifacts`, where `<root>` is the project's
  repository (`auxcli.project.store_root`: also the user's repository inside `dvc exp run --temp`/`--queue`);
- experiment `tracking.experiment`; one run per seed named `<name>-s<seed>`;
- tags `auxcli.spec_name`, `auxcli.seed`, `auxcli.spec_sha256`, `auxcli.git_commit`, `auxcli.git_branch`,
  `auxcli.git_dirty`, and for transfers `auxcli.transfer.*` (source run id, checkpoint path and sha256);
- params: the resolved spec flattened to dotted keys (`train.lr`, `transfer.from`, ...);
- metrics per epoch with step=epoch (1-based); summary metrics once at the end (see `auxcli.train.metrics`);
- `auxcli analyze` logs to its own runs, named `auxcli-analysis` and tagged `auxcli.analysis=true`
  (`ANALYSIS_TAG`), with the input runs' ids in `auxcli.analysis.input_run_ids`; reports skip them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from auxcli.errors import TrackingError
from auxcli.project import store_root

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
ANALYSIS_TAG = "auxcli.analysis"


def resolve_tracking_uri(uri: str | None) -> str:
    """The store a command uses: the spec's/option's URI, else the environment's, else the embedded one."""
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{store_root() / DEFAULT_DB}"


def default_artifact_location(experiment: str) -> str | None:
    """Artifacts beside the embedded store (None: let a remote server decide)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (store_root() / DEFAULT_ARTIFACTS / experiment).as_uri()


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> dotted keys, the form params take in MLflow and `--set`."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = "null" if value is None else value
    return flat


class RunTracker:
    """One MLflow run for one (spec, seed): started fresh or resumed by id, closed with a status."""

    def __init__(self, uri: str | None, experiment: str):
        import mlflow
        from mlflow.tracking import MlflowClient

        # Fail fast on an unreachable server instead of retrying for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self.uri = resolve_tracking_uri(uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self._mlflow = mlflow
        try:
            found = self.client.get_experiment_by_name(experiment)
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(
                experiment, artifact_location=default_artifact_location(experiment))
        except Exception as exc:  # MLflow raises many types for bad URIs and unreachable servers
            raise TrackingError(
                f"MLflow tracking store {self.uri} cannot be used ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Check tracking.uri in the spec or "
                "MLFLOW_TRACKING_URI; leave both unset for the embedded store in ./mlflow.db."
            ) from None
        self.run_id: str | None = None

    def start(self, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start:start + 100])
        return self.run_id

    def resume(self, run_id: str) -> bool:
        """Continue an earlier run; False when the store no longer has it."""
        try:
            self.client.get_run(run_id)
        except Exception:
            return False
        self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        return True

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifacts(self, paths: list[Path], subdir: str | None = None) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path), artifact_path=subdir)

    def end(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def find_run_id(uri: str | None, run_ref: str) -> str | None:
    """A run id from `runs:/<id>[/...]` or a bare id, if the store has that run."""
    from mlflow.tracking import MlflowClient

    run_id = run_ref.removeprefix("runs:/").split("/")[0]
    try:
        MlflowClient(tracking_uri=resolve_tracking_uri(uri)).get_run(run_id)
    except Exception:
        return None
    return run_id


def download_final_checkpoint(uri: str | None, run_id: str, target: Path) -> Path | None:
    """Fetch a finished run's `model/final.pt` artifact into `target`; None if it has none."""
    from mlflow.artifacts import download_artifacts

    try:
        return Path(download_artifacts(run_id=run_id, artifact_path="model/final.pt", dst_path=str(target),
                                       tracking_uri=resolve_tracking_uri(uri)))
    except Exception:
        return None
