"""Session-wide engines for the cluster tests: a one-node Slurm cluster, PostgreSQL and an MLflow server
on it, each started once (about a minute in all here, mostly MLflow's schema migrations) and stopped at
the end. Tests skip, with the reason, where the binaries are missing (run tests/cluster/install.sh as
root) or this is not root (Slurm's daemons and `runuser postgres` need it)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from engines import (
    missing_binaries,
    start_mlflow_server,
    start_postgres,
    start_slurm,
    stop_group,
)


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the cluster tests start slurmctld, slurmd and PostgreSQL as root; run them as root"
    missing = missing_binaries()
    if missing:
        return f"missing {', '.join(missing)}: run tests/cluster/install.sh as root (apt: slurm-wlm munge postgresql)"
    try:
        import psycopg2  # noqa: F401  # MLflow's PostgreSQL driver
        import submitit  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed: pip install -e '.[test]'"
    return None


@pytest.fixture(scope="session")
def engines_available():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm(engines_available, tmp_path_factory):
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # every sbatch/squeue/scancel of the session, jobs included
    yield cluster
    cluster.run("scancel", "--user=root")
    cluster.stop()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


@pytest.fixture(scope="session")
def postgres(engines_available):
    # not under pytest's 0700 temporary root: the `postgres` user must reach its data folder
    root = Path(tempfile.mkdtemp(prefix="auxcli-test-postgres-"))
    root.chmod(0o755)
    server = start_postgres(root / "cluster")
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    server = start_mlflow_server(postgres.uri, root / "artifacts", root / "server.log")
    yield server
    stop_group(server)
