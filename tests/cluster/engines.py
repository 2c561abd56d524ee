"""Start the real engines the cluster tests use, as root, in temporary folders: munge, a one-node Slurm
cluster (slurmctld + slurmd on this host, its real CPUs and memory), PostgreSQL and an MLflow server on it.

Nothing touches the machine's own configuration: munge runs on its own socket and key, Slurm reads a
generated slurm.conf (SLURM_CONF), PostgreSQL is a fresh `initdb` cluster on a free loopback port with
`trust` authentication for a passwordless local role (no password in any URI). Each `start_*` returns an
object whose `stop()` ends what it started. Install the binaries with `tests/cluster/install.sh`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

POSTGRES_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


def missing_binaries() -> list[str]:
    """The engine binaries this machine lacks (empty: the cluster tests can run)."""
    wanted = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo"]
    missing = [name for name in wanted if not _which(name)]
    if not POSTGRES_BIN or not (POSTGRES_BIN[-1] / "initdb").exists():
        missing.append("postgresql (initdb)")
    return missing


def _which(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for d in ("/usr/sbin", "/sbin") if (p := Path(d, name)).exists()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, *, timeout_s: float, what: str, interval_s: float = 0.2):
    """Poll `check()` until it returns something truthy; raise with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(interval_s)


@dataclass
class Engine:
    processes: list[subprocess.Popen] = field(default_factory=list)
    pid_files: list[Path] = field(default_factory=list)

    def stop(self) -> None:
        pids = [p.pid for p in self.processes]
        for f in self.pid_files:
            try:
                pids.append(int(f.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                pass
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


# ---------------------------------------------------------------------------------------------- Slurm

@dataclass
class SlurmCluster(Engine):
    conf: Path = Path()
    partition: str = "debug"
    env: dict[str, str] = field(default_factory=dict)  # SLURM_CONF for every Slurm command

    def run(self, *args: str) -> str:
        return subprocess.run(list(args), env={**os.environ, **self.env}, capture_output=True, text=True,
                              check=True).stdout


def _memory_mb() -> int:
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return max(1024, total_kb // 1024 - 2048)  # leave the OS some; slurmd refuses a node bigger than it is


def start_slurm(root: Path) -> SlurmCluster:
    """munged + slurmctld + slurmd, one node (this host), one partition `debug`, ports on loopback."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(exist_ok=True)
    munge = root / "munge"
    os.chmod(munge, 0o700)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    engine = SlurmCluster()
    munged = subprocess.Popen([_which("munged"), "--foreground", "--force", f"--key-file={key}",
                               f"--socket={munge / 'munge.socket'}", f"--pid-file={munge / 'munged.pid'}",
                               f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'seed'}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine.processes.append(munged)
    wait_until(lambda: (munge / "munge.socket").exists(), timeout_s=20, what="munged's socket")
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    conf = root / "slurm.conf"
    conf.write_text(f"""\
ClusterName=auxcli-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge / 'munge.socket'},cred_expire=10
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'slurmctld.log'}
SlurmdLogFile={root / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
MinJobAge=30
JobRequeue=1
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    engine.conf = conf
    engine.env = {"SLURM_CONF": str(conf)}
    env = {**os.environ, **engine.env}
    subprocess.run([_which("slurmctld"), "-c", "-i"], env=env, check=True)  # -c: a fresh state; daemonises
    engine.pid_files.append(root / "slurmctld.pid")
    subprocess.run([_which("slurmd"), "-N", host], env=env, check=True)
    engine.pid_files.append(root / "slurmd.pid")

    def node_idle() -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True).stdout
        return out.strip() in ("idle", "mix", "alloc")

    try:
        wait_until(node_idle, timeout_s=60, what="the Slurm node becoming idle")
    except TimeoutError:
        engine.stop()
        logs = "\n".join(p.read_text()[-2000:] for p in (root / "slurmctld.log", root / "slurmd.log") if p.exists())
        raise RuntimeError(f"Slurm did not start:\n{logs}") from None
    return engine


# ---------------------------------------------------------------------------------------------- PostgreSQL

@dataclass
class Postgres(Engine):
    uri: str = ""  # postgresql+psycopg2://auxcli@127.0.0.1:PORT/mlflow, no password (trust on loopback)
    port: int = 0


def _as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, text=True,
                          **kwargs)


def start_postgres(root: Path) -> Postgres:
    """A fresh cluster in `root` owned by `postgres`, on 127.0.0.1:<free port>, database `mlflow`."""
    bin_dir = POSTGRES_BIN[-1]
    root.mkdir(parents=True, exist_ok=True)
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir(exist_ok=True)
    for path in (root, sockets):
        shutil.chown(path, "postgres", "postgres")
    os.chmod(root, 0o755)
    _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
    port = free_port()
    server = subprocess.Popen(["runuser", "-u", "postgres", "--", str(bin_dir / "postgres"), "-D", str(data),
                               "-h", "127.0.0.1", "-p", str(port), "-k", str(sockets)],
                              stdout=open(root / "postgres.log", "w"), stderr=subprocess.STDOUT)
    engine = Postgres(processes=[server], port=port)

    def ready() -> bool:
        return subprocess.run([str(bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                              capture_output=True).returncode == 0

    wait_until(ready, timeout_s=60, what="PostgreSQL accepting connections")
    psql = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
    _as_postgres([*psql, "-c", "CREATE ROLE auxcli LOGIN"])
    _as_postgres([*psql, "-c", "CREATE DATABASE mlflow OWNER auxcli"])
    engine.uri = f"postgresql+psycopg2://auxcli@127.0.0.1:{port}/mlflow"
    return engine


# ---------------------------------------------------------------------------------------------- MLflow server

@dataclass
class MlflowServer(Engine):
    url: str = ""
    artifacts: Path = Path()


def start_mlflow_server(backend_uri: str, artifacts: Path, log: Path) -> MlflowServer:
    """`mlflow server` on PostgreSQL with proxied artifacts, on 127.0.0.1:<free port>."""
    import urllib.request

    artifacts.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # no job-runner consumers (huey): auxcli uses none of the server's jobs, and they cost seconds of start-up
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
                               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"],
                              stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    engine = MlflowServer(processes=[server], url=f"http://127.0.0.1:{port}", artifacts=artifacts)

    def healthy() -> bool:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{engine.url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(healthy, timeout_s=180, what="the MLflow server answering /health", interval_s=0.5)
    return engine


def stop_group(engine: MlflowServer) -> None:
    """The MLflow server runs workers in its own session: end the whole group."""
    for p in engine.processes:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:  # the server's job consumers (huey) may outlive it
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
