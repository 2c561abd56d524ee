"""The only module that talks to MLflow while training: store resolution, one run per seed, logging.

The MLflow contract (the report, the DVC pipeline and users' queries read it):
- store: `tracking.uri`, else `MLFLOW_TRACKING_URI`, else the embedded default
  `sqlite:///<root>/mlflow.db` with artifacts in `<root>/mlartifacts`, where `<root>` is the project's
  repository (`auxcli.project.store_root`: also the user's repository inside `dvc exp run --temp`/`--queue`);
- experiment `tracking.experiment`; one run per seed named `<name>-s<seed>`;
- tags `auxcli.spec_name`, `auxcli.seed`, `auxcli.spec_sha256` (the whole resolved spec), `auxcli.result_id`
  (the result's identity, `auxcli.identity`), `auxcli.git_commit`, `auxcli.git_branch`,
  `auxcli.git_dirty`, and for transfers `auxcli.transfer.*` (source run id, checkpoint path and sha256);
- params: the resolved spec flattened to dotted keys (`train.lr`, `transfer.from`, ...);
- metrics per epoch with step=epoch (1-based); summary metrics once at the end (see `auxcli.train.metrics`);
- `auxcli analyze` logs to its own runs in the experiment `<experiment>-analysis`, named `auxcli-analysis`
  and tagged `auxcli.analysis=true` (`ANALYSIS_TAG`), with the input runs' ids in
  `auxcli.analysis.input_run_ids`; reports skip them.

What the MLflow UI and its users expect as well (MLflow 3):
- the experiment is tagged `mlflow.experimentKind=custom_model_development`, MLflow 3's kind for model
  training (the UI's other kind, `genai_development`, opens on traces); links carry
  `workflowType=machine_learning`, which the 3.x UI reads to show runs, charts and models;
- standard tags: `mlflow.source.name`/`.type`, `mlflow.source.git.commit`/`.branch`/`.repoURL`,
  `mlflow.user`, and `mlflow.note.content` (the run's description: command line and resolved spec);
- one parent run per spec (`<name>`, tag `auxcli.parent=true`, no `auxcli.seed`) with each seed's run
  nested under it (`mlflow.parentRunId`); the parent holds the mean and `<metric>_std` (sample std, from
  two seeds on) of the seeds' summary metrics and `seeds_finished`, updated as seeds finish;
- the data set as the run's dataset input (name, digest, source), the final weights as a logged model
  (MLflow 3 `LoggedModel`, so "Models" and the registry work), and for transfers the source run's
  logged model as a model input;
- system metrics (`system/*`) while training when `runtime.system_metrics` is on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from auxcli.errors import TrackingError
from auxcli.project import store_root

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
# MLflow 3's experiment kinds (the UI's ExperimentKind): model training, not GenAI development.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")  # an MLflow run id as the store writes it


def names_a_run(ref: str) -> bool:
    """`runs:/<id>[/...]` or a bare 32-hex run id: a transfer source, bundle target or analysis input that
    is an MLflow run, not a path or spec name."""
    return ref.startswith("runs:/") or bool(RUN_ID.match(ref))
PARENT_TAG = "auxcli.parent"
ANALYSIS_TAG = "auxcli.analysis"
# `auxcli migrate` (auxcli.storecopy): a copied run names the id it had in the store it came from, so the
# ids that checkpoints and old records hold still find it (`RunTracker.current_id`).
MIGRATED_FROM_TAG = "auxcli.migrated_from"


def resolve_tracking_uri(uri: str | None) -> str:
    """The store a command uses: the spec's/option's URI, else the environment's, else the embedded one.

    A URI with a password is refused (`auxcli.credentials`): it would be written wherever the URI is."""
    from auxcli.credentials import refuse_password

    if uri:
        refuse_password(uri, f"the tracking URI {display_uri(uri)} (tracking.uri or --tracking-uri)")
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        refuse_password(os.environ["MLFLOW_TRACKING_URI"],
                        f"MLFLOW_TRACKING_URI={display_uri(os.environ['MLFLOW_TRACKING_URI'])}")
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{store_root() / DEFAULT_DB}"


def default_artifact_location(experiment: str, uri: str | None = None) -> str | None:
    """Artifacts beside the embedded store (None: let a remote server decide, e.g. a tracking server's
    proxied `--artifacts-destination`, whether it was named by MLFLOW_TRACKING_URI or tracking.uri)."""
    import re

    from auxcli.spec import NAME_PATTERN

    if os.environ.get("MLFLOW_TRACKING_URI") or (uri and not uri.startswith(("sqlite:", "file:"))):
        return None
    if not re.fullmatch(NAME_PATTERN, experiment):  # a name, never a path out of mlartifacts/
        raise TrackingError(f"experiment name {experiment!r} cannot name a folder; allowed: 1-100 letters, "
                            "digits, '.', '_' or '-', starting with a letter or digit.")
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


# ---------------------------------------------------------------------------------------------- opening a store
# Issue 9: a bad URI is a clear error before MLflow sees it; SQLite stores wait for each other instead of
# failing with "database is locked", and are created once, whole, even when several runs start at once.

SQLITE_BUSY_TIMEOUT_MS = 60_000
_SCHEMES = ("sqlite", "file", "http", "https", "databricks", "databricks-uc", "uc", "postgresql", "mysql", "mssql")
# SQLAlchemy's default driver per dialect, and the module each driver name imports.
_DEFAULT_DRIVER = {"postgresql": "psycopg2", "mysql": "mysqldb", "mssql": "pyodbc"}
_DRIVER_MODULE = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pg8000": "pg8000", "mysqldb": "MySQLdb",
                  "pymysql": "pymysql", "mysqlconnector": "mysql.connector", "pyodbc": "pyodbc",
                  "pymssql": "pymssql"}
_SQLITE_HEADER = b"SQLite format 3\x00"


def check_tracking_uri(uri: str) -> None:
    """Refuse, with a `TrackingError` (exit 2), URIs MLflow cannot open: unknown schemes, database
    schemes whose driver is not installed, SQLite files in missing folders or that are not SQLite."""
    from urllib.parse import urlsplit

    scheme = urlsplit(uri).scheme.lower() if "://" in uri or uri.startswith("sqlite:") else ""
    base, _, driver = scheme.partition("+")
    if len(scheme) == 1:  # a Windows drive letter: a plain path
        base = ""
    if base and base not in _SCHEMES:
        raise TrackingError(f"tracking URI {uri!r}: unknown scheme {scheme + '://'!r}; allowed: "
                            f"{', '.join(s + '://' for s in _SCHEMES)} or a folder path. Check tracking.uri "
                            "in the spec, --tracking-uri or MLFLOW_TRACKING_URI.")
    if base in _DEFAULT_DRIVER:
        import importlib.util

        driver = driver or _default_driver(base)
        module = _DRIVER_MODULE.get(driver, driver)
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise TrackingError(f"tracking URI {display_uri(uri)}: the {base} driver {driver!r} is not installed "
                                f"(python module {module!r}). Install it (pip install {module.split('.')[0]}) or "
                                "use the embedded store (leave tracking.uri unset).")
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite_file(uri, path)


def _default_driver(dialect: str) -> str:
    """The driver SQLAlchemy picks for `dialect://` (SQLAlchemy 2.1 picks psycopg 3 for postgresql)."""
    try:
        from sqlalchemy.engine.url import make_url

        return make_url(f"{dialect}://").get_dialect().driver
    except Exception:  # an SQLAlchemy that cannot say: the long-standing defaults
        return _DEFAULT_DRIVER[dialect]


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for anything else, and for in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri[len("sqlite:///"):].split("?")[0]
    return Path(rest) if rest and rest != ":memory:" else None


def _check_sqlite_file(uri: str, path: Path) -> None:
    where = f"tracking store {path}"
    if not path.parent.is_dir():
        raise TrackingError(f"{where}: the folder {path.parent} does not exist; create it or fix the URI {uri}.")
    if not path.exists():
        if not os.access(path.parent, os.W_OK):
            raise TrackingError(f"{where} does not exist and its folder {path.parent} is not writable.")
        return
    if not path.is_file():
        raise TrackingError(f"{where} is not a file; point the URI at an SQLite database file.")
    try:
        with open(path, "rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise TrackingError(f"{where} cannot be read ({exc.strerror}).") from None
    if header and header != _SQLITE_HEADER:
        raise TrackingError(f"{where} is not an SQLite database (damaged or another kind of file). Move it away "
                            "to start a fresh store, or point tracking.uri at the right file.")
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise TrackingError(f"{where} is read-only (SQLite needs to write the file and a journal beside it in "
                            f"{path.parent}); fix the permissions or copy the store somewhere writable.")


def open_client(uri: str) -> Any:
    """An `MlflowClient` on `uri`, with the checks above; a local SQLite store is created once, whole.

    Creating a store runs MLflow's schema migrations. Two processes doing that on one file at once
    crash, and a full disk halfway leaves a file that never opens again; so the store is built in a
    temporary file beside it under an exclusive lock and linked into place only when complete.
    """
    from mlflow.tracking import MlflowClient

    check_tracking_uri(uri)
    _install_sqlite_busy_timeout()
    path = sqlite_path(uri)
    if path is not None and not path.exists():
        with _exclusive(path.with_name(f".{path.name}.lock")):
            for stale in path.parent.glob(f".{path.name}.init-*"):  # from a creation that was killed
                stale.unlink(missing_ok=True)
            if not path.exists():
                _create_sqlite_store(path)
                _dispose_engine(uri)  # a cached engine of this process may hold a deleted earlier file
    client = MlflowClient(tracking_uri=uri)
    if path is not None:
        _retry_locked(lambda: client.search_experiments(max_results=1))  # opens (and checks) the schema now
    return client


def get_or_create_experiment(client: Any, name: str) -> str:
    """The id of experiment `name`, created with artifacts beside the embedded store if it is new;
    safe when another process creates it at the same moment."""
    def attempt() -> str:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            uri = getattr(getattr(client, "_tracking_client", None), "tracking_uri", None)
            return client.create_experiment(name, artifact_location=default_artifact_location(name, uri))
        except Exception:
            found = client.get_experiment_by_name(name)  # created by a concurrent run in between
            if found is None:
                raise
            return found.experiment_id

    return _retry_locked(attempt)


def _create_sqlite_store(path: Path) -> None:
    from mlflow.tracking import MlflowClient

    import uuid

    # unique per call: MLflow caches stores by URI, and a cached one would skip the migrations
    tmp = path.with_name(f".{path.name}.init-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp_uri = f"sqlite:///{tmp}"
    try:
        MlflowClient(tracking_uri=tmp_uri).search_experiments(max_results=1)  # runs the migrations
        _dispose_engine(tmp_uri)
        try:
            os.link(tmp, path)  # atomic; never replaces a store someone else made meanwhile
        except FileExistsError:
            pass
    except OSError as exc:
        raise TrackingError(f"cannot create the tracking store {path}: {exc.strerror or exc}. Nothing was left "
                            "behind; free space or choose a writable folder and re-run.") from None
    except Exception as exc:
        raise TrackingError(f"cannot create the tracking store {path} ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Nothing was left behind; "
                            "free space or choose a writable folder and re-run.") from None
    finally:
        _dispose_engine(tmp_uri)
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            leftover.unlink(missing_ok=True)


def _dispose_engine(uri: str) -> None:
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        engine = SqlAlchemyStore._engine_map.pop(uri, None)
        if engine is not None:
            engine.dispose()
    except (ImportError, AttributeError):  # a future MLflow without the engine cache
        pass


def _retry_locked(fn: Any, attempts: int = 5) -> Any:
    """Call `fn`, retrying with backoff while SQLite says "database is locked" (a writer outlasted the
    busy timeout, or two deferred transactions deadlocked, where SQLite does not wait)."""
    import time

    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if "locked" not in str(exc).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)


_BUSY_TIMEOUT_INSTALLED = {"done": False}


def _install_sqlite_busy_timeout() -> None:
    """Every SQLite connection SQLAlchemy opens waits up to 60 s for another writer (pysqlite's default is 5 s)."""
    if _BUSY_TIMEOUT_INSTALLED["done"]:
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.pool import Pool

    def busy_timeout(dbapi_connection: Any, record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")

    event.listen(Pool, "connect", busy_timeout)
    _BUSY_TIMEOUT_INSTALLED["done"] = True


class _exclusive:
    """An exclusive `flock` on a small file (created if needed), released on exit or process death."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> None:
        import fcntl

        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise TrackingError(f"cannot create the tracking store's lock {self.path}: {exc.strerror}.") from None
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing drops the flock


def display_uri(uri: str) -> str:
    """The URI without a password, for messages, reports and bundles."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        if parts.password:
            netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            return parts._replace(netloc=netloc).geturl()
    except ValueError:  # a malformed netloc (bad port, unclosed bracket): mask the text between ':' and '@'
        return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", uri)
    return uri


class RunTracker:
    """One MLflow run for one (spec, seed): started fresh or resumed by id, closed with a status."""

    def __init__(self, uri: str | None, experiment: str):
        import mlflow

        # Fail fast on an unreachable server instead of retrying for minutes.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        self.uri = resolve_tracking_uri(uri)
        self._mlflow = mlflow
        try:
            self.client = open_client(self.uri)
            self.experiment_id = ensure_experiment(self.client, experiment)
        except TrackingError:
            raise
        except Exception as exc:  # MLflow raises many types for bad URIs and unreachable servers
            raise TrackingError(
                f"MLflow tracking store {self.uri} cannot be used ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200] if str(exc) else ''}). Check tracking.uri in the spec or "
                "MLFLOW_TRACKING_URI; leave both unset for the embedded store in ./mlflow.db."
            ) from None
        self.run_id: str | None = None

        self._system_metrics = None

    def start(self, run_name: str, tags: dict[str, str], params: dict[str, Any],
              parent_run_id: str | None = None) -> str:
        """A new run, nested under `parent_run_id` when given."""
        if parent_run_id:
            tags = {**tags, "mlflow.parentRunId": parent_run_id}
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        self.log_params(params)
        return self.run_id

    def log_params(self, params: dict[str, Any], run_id: str | None = None) -> None:
        """Params in batches of 100 (the store's limit per call), values cut to MLflow's 6000 characters."""
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id or self.run_id, params=items[start:start + 100])

    def spec_parent(self, spec_name: str, result_id: str, tags: dict[str, str], params: dict[str, Any],
                    description: str | None = None) -> str:
        """The parent run of a spec (same name and result identity, tag `auxcli.result_id`: a spec with
        more seeds shares it), created on first use with `description`;
        returns its id. It stays RUNNING while seeds run and holds their aggregates (`update_parent`)."""
        found = self.spec_parents(spec_name, result_id)
        if found:
            return found[0]
        run = self.client.create_run(self.experiment_id, run_name=spec_name, tags={
            **tags, PARENT_TAG: "true", "auxcli.spec_name": spec_name, "auxcli.result_id": result_id,
            **({"mlflow.note.content": description} if description else {})})
        # seeds started at once (run --concurrent, Slurm) agree on the oldest they see
        first = self.spec_parents(spec_name, result_id)[0]
        if first != run.info.run_id:
            self.client.delete_run(run.info.run_id)
            return first
        self.log_params(params, run.info.run_id)
        return run.info.run_id

    def spec_parents(self, spec_name: str, result_id: str) -> list[str]:
        """The ids of the spec's live parent runs, oldest first (more than one only while seeds that
        started at once settle on one)."""
        runs = self.client.search_runs(
            [self.experiment_id], order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
            filter_string=f"tags.`{PARENT_TAG}` = 'true' and tags.`auxcli.spec_name` = '{spec_name}' "
                          f"and tags.`auxcli.result_id` = '{result_id}'")
        return [run.info.run_id for run in runs]

    def is_live(self, run_id: str) -> bool:
        """Whether `run_id` exists and is not deleted (a deleted run refuses every write)."""
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except Exception:  # MLflow raises RestException / MlflowException for an unknown id
            return False

    def move_under(self, run_id: str, parent_run_id: str) -> None:
        """Nest `run_id` under `parent_run_id` (the UI's tree and `update_parent` follow this tag)."""
        self.client.set_tag(run_id, "mlflow.parentRunId", parent_run_id)

    def update_parent(self, parent_run_id: str, seeds: list[int]) -> dict[str, float]:
        """Mean and sample std over the finished seeds (latest run per seed) of every summary metric;
        FINISHED once all of `seeds` are, RUNNING until then. Returns what it logged."""
        import time

        from mlflow.entities import Metric

        children = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
                                                "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"], max_results=1000)
        latest = {run.data.tags.get("auxcli.seed"): run for run in children}  # a rerun replaces its seed
        aggregates = seed_aggregates([run.data.metrics for run in latest.values()])
        now = int(time.time() * 1000)
        if aggregates:
            self.client.log_batch(parent_run_id, metrics=[Metric(k, v, now, 0) for k, v in aggregates.items()])
        done = {str(seed) for seed in seeds} <= set(latest)
        if done:
            self.client.set_terminated(parent_run_id, status="FINISHED")
        else:
            self.client.update_run(parent_run_id, status="RUNNING")
        return aggregates

    def describe(self, text: str) -> None:
        """The run's description in the UI (markdown)."""
        self.client.set_tag(self.run_id, "mlflow.note.content", text)

    def log_dataset(self, name: str, digest: str, source: str, context: str = "train",
                    profile: dict[str, Any] | None = None) -> None:
        """The data set as the run's dataset input (MLflow's `mlflow.data` record: name, digest, source)."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name, digest=digest, source_type="local", source=json.dumps({"uri": source}),
                          profile=json.dumps(profile) if profile else None)
        self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])

    def log_model(self, name: str, files: list[Path], metrics: dict[str, float], step: int,
                  params: dict[str, Any] | None = None, classifier: Any = None) -> str:
        """The final weights as an MLflow 3 logged model (source run: this run), with `files` as its
        artifacts and `metrics` linked to it; returns the model id (`models:/<id>`). With `classifier`
        (`auxcli.models.export.ImageClassifier`) the model is also MLflow's `pytorch` flavour:
        `mlflow.pytorch.load_model("models:/<id>")` and `mlflow.pyfunc` give images -> logits."""
        import shutil
        import tempfile
        import time

        from mlflow.entities import LoggedModelOutput, Metric

        # MLflow's store refuses / : . % " ' in model names (mlflow.utils.validation._validate_logged_model_name),
        # which spec names allow ('.' in a sweep point `smoke-lr0.05`): the exact name is the tag auxcli.spec_name.
        # The UI's "Logged from" reads the model's own mlflow.source.* tags, so they are the run's.
        run_tags = self.client.get_run(self.run_id).data.tags
        tags = {**{k: v for k, v in run_tags.items() if k.startswith("mlflow.source.") or k == "mlflow.user"},
                "auxcli.spec_name": name}
        model = self.client.create_logged_model(self.experiment_id, name=re.sub(r"[/:.%\"']", "_", name),
                                                source_run_id=self.run_id, tags=tags,
                                                params={k: str(v)[:6000] for k, v in (params or {}).items()},
                                                model_type="auxcli")
        try:
            with tempfile.TemporaryDirectory() as tmp:  # the model's artifacts: MLmodel & co. (if any), then `files`
                staging = Path(tmp, "model")
                if classifier is None or not _save_pytorch_flavour(classifier, staging):
                    shutil.rmtree(staging, ignore_errors=True)  # a failed export may have written part of it
                    staging.mkdir()
                for path in files:
                    shutil.copy2(path, staging / path.name)
                self.client.log_model_artifacts(model.model_id, str(staging))
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[
                Metric(k, float(v), now, step, model_id=model.model_id) for k, v in metrics.items()])
            self.client.log_outputs(self.run_id, [LoggedModelOutput(model.model_id, step)])
            self.client.finalize_logged_model(model.model_id, "READY")
        except BaseException:
            self.client.finalize_logged_model(model.model_id, "FAILED")
            raise
        return model.model_id

    def log_model_input(self, model_id: str) -> None:
        """A model the run started from (a transfer's source), as a model input."""
        from mlflow.entities import LoggedModelInput

        self.client.log_inputs(self.run_id, models=[LoggedModelInput(model_id)])

    def start_system_metrics(self) -> None:
        """CPU, memory, disk, network and (with pynvml) GPU use as `system/*` metrics until `end`."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._system_metrics = SystemMetricsMonitor(self.run_id, tracking_uri=self.uri, resume_logging=True)
        self._system_metrics.start()

    def current_id(self, run_id: str) -> str | None:
        """`run_id` if this store has it, else the id of its copy made by `auxcli migrate` (tagged
        `auxcli.migrated_from`: a partial run's `last.pt` still names the old id), else None."""
        try:
            self.client.get_run(run_id)
            return run_id
        except Exception:
            pass
        if not RUN_ID.match(run_id):
            return None
        copies = self.client.search_runs([self.experiment_id], max_results=1,
                                         filter_string=f"tags.`{MIGRATED_FROM_TAG}` = '{run_id}'")
        return copies[0].info.run_id if copies else None

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
        if self._system_metrics is not None:
            self._system_metrics.finish()
            self._system_metrics = None
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)


def ensure_experiment(client: Any, name: str) -> str:
    """The experiment's id, created if needed, tagged as a model-training experiment for MLflow 3's UI
    (an experiment tagged otherwise by its owner keeps its tag)."""
    experiment_id = get_or_create_experiment(client, name)
    found = client.get_experiment(experiment_id)
    if EXPERIMENT_KIND_TAG not in found.tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return experiment_id


def seed_aggregates(per_seed: list[dict[str, float]]) -> dict[str, float]:
    """Per summary metric (`final_*`, `best_*`): the mean over seeds under its own name, the sample std
    (ddof=1) as `<name>_std`, and `seeds_finished`. One seed gets no `_std`: a sample std is undefined for
    n = 1, and a 0 would read as "perfectly reproducible"."""
    import math
    import statistics

    out: dict[str, float] = {"seeds_finished": float(len(per_seed))} if per_seed else {}
    keys = sorted({k for metrics in per_seed for k in metrics if k.startswith(("final_", "best_"))})
    for key in keys:
        values = [m[key] for m in per_seed if key in m and math.isfinite(m[key])]
        if values:
            out[key] = statistics.fmean(values)
            if len(values) > 1:
                out[f"{key}_std"] = statistics.stdev(values)
    return out


def ui_url(base_url: str, experiment_id: str, run_id: str | None = None) -> str:
    """A link into the MLflow UI: the experiment's runs, or one run, shown as model training."""
    page = f"#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base_url.rstrip('/')}/{page}?workflowType=machine_learning"


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


def where_message(tracker: RunTracker, label: str, folder: Path, run_id: str) -> str:
    """Where a finished run is, and the command that opens it in the MLflow UI."""
    uri = tracker.uri
    lines = [f"{label}: run folder {folder}", f"  MLflow run {run_id} in {display_uri(uri)}"]
    if uri.startswith(("http://", "https://")):
        lines.append(f"  open: {ui_url(uri, tracker.experiment_id, run_id)}")
    else:
        command = "auxcli ui" + ("" if uri == resolve_tracking_uri(None) else f" --tracking-uri {uri}")
        lines.append(f"  open: {command}   then {ui_url('http://127.0.0.1:5000', tracker.experiment_id, run_id)}")
    return "\n".join(lines)


def _save_pytorch_flavour(classifier: Any, folder: Path) -> bool:
    """`classifier` saved into `folder` by `mlflow.pytorch.save_model` in its torch.export ("pt2") format,
    with a two-image example of its input (float32 in [0, 1]); False, and a warning, if torch.export cannot
    trace it: the weights and spec are logged all the same."""
    import logging
    from importlib import metadata

    import mlflow.pytorch
    import numpy as np

    channels = int(classifier.mean.shape[1])
    size = classifier.image_size
    example = np.random.default_rng(0).random((2, channels, size, size), dtype=np.float32)
    try:
        mlflow.pytorch.save_model(classifier, str(folder), serialization_format="pt2", input_example=example,
                                  pip_requirements=[f"torch=={metadata.version('torch')}"])
    except Exception as exc:  # an export limitation must not cost the record of a finished run
        logging.getLogger(__name__).warning("the logged model has no pytorch flavour (torch.export failed: %s: %s)",
                                            type(exc).__name__, (str(exc).splitlines() or [""])[0])
        return False
    return True
