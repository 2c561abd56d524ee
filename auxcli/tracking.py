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
    import re

    from auxcli.spec import NAME_PATTERN

    if os.environ.get("MLFLOW_TRACKING_URI"):
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

        driver = driver or _DEFAULT_DRIVER[base]
        module = _DRIVER_MODULE.get(driver, driver)
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise TrackingError(f"tracking URI {_display(uri)}: the {base} driver {driver!r} is not installed "
                                f"(python module {module!r}). Install it (pip install {module.split('.')[0]}) or "
                                "use the embedded store (leave tracking.uri unset).")
    path = sqlite_path(uri)
    if path is not None:
        _check_sqlite_file(uri, path)


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
            return client.create_experiment(name, artifact_location=default_artifact_location(name))
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


def _display(uri: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.password:
        return uri.replace(f":{parts.password}@", ":***@")
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
            self.experiment_id = get_or_create_experiment(self.client, experiment)
        except TrackingError:
            raise
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
