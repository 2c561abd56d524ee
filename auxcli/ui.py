"""`auxcli ui`: the MLflow UI over the store the runs were recorded in.

Starts `mlflow server` (mlflow 3.x: uvicorn, one worker is plenty for one user) as a child process on
the same resolved store as `auxcli run` (auxcli.tracking.resolve_tracking_uri), bound to 127.0.0.1 by
default; MLflow's own host check then admits only localhost and private addresses. For the embedded store
the artifact root is `<cwd>/mlartifacts`, where `auxcli run` puts artifacts. The server runs in its own
process group so that stopping it also stops any worker it forked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from auxcli.errors import TrackingError

READY_TIMEOUT_S = 120.0
_LOGS: dict[int, IO[bytes]] = {}  # pid -> the server's output, read when it fails


def server_command(uri: str, host: str, port: int, artifacts: Path | None) -> list[str]:
    """The `mlflow server` command line (see `mlflow server --help`)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", "1"]
    if artifacts is not None:
        cmd += ["--default-artifact-root", artifacts.as_uri(), "--artifacts-destination", artifacts.as_uri()]
    return cmd


def start_ui(uri: str, host: str = "127.0.0.1", port: int = 5000, *,
             timeout_s: float = READY_TIMEOUT_S) -> tuple[subprocess.Popen, str]:
    """Start the server and wait until it answers `/health`; returns the process and its address.

    Raises `TrackingError` when the store is missing, the port is taken or the server does not come up.
    """
    from auxcli.report.collect import _check_exists  # a missing local store: say so, don't create one
    from auxcli.project import store_root
    from auxcli.tracking import DEFAULT_ARTIFACTS, resolve_tracking_uri

    if uri.startswith(("http://", "https://")):
        raise TrackingError(f"{uri} is already a tracking server: open it in a browser instead.")
    from auxcli.tracking import check_tracking_uri

    check_tracking_uri(uri)  # unknown schemes, missing drivers, files that are not SQLite: a clear error
    _check_exists(uri)
    embedded = uri == resolve_tracking_uri(None) and not os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = store_root() / DEFAULT_ARTIFACTS if embedded else None
    if not _port_free(host, port):
        raise TrackingError(f"port {port} on {host} is in use; pick another with --port.")
    # No telemetry; no job runner (it serves GenAI jobs, spawns more processes and slows the start).
    env = {"MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    # A file, not a pipe: a long-lived server would block once a pipe nobody reads is full.
    log = tempfile.NamedTemporaryFile(prefix="auxcli-ui-", suffix=".log")
    parent = os.getpid()
    proc = subprocess.Popen(server_command(uri, host, port, artifacts), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                            preexec_fn=lambda: _die_with_parent(parent))
    _LOGS[proc.pid] = log
    url = f"http://{_url_host(host)}:{port}"  # where this process polls /health
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = " | ".join(_log_text(proc).strip().splitlines()[-5:])
                raise TrackingError(f"mlflow server exited with code {proc.returncode}: {tail or 'no output'}")
            if _healthy(url):
                return proc, listen_url(host, port)
            time.sleep(0.25)  # polling interval while the server boots
        raise TrackingError(f"mlflow server did not answer at {url} within {timeout_s:.0f} s.")
    except BaseException:  # interrupted or failed while booting: leave no server behind
        stop_ui(proc)
        raise


def is_server(uri: str) -> bool:
    """A tracking server serves its own UI: `auxcli ui` links to it instead of starting another."""
    return uri.startswith(("http://", "https://"))


def server_link(uri: str, experiment: str) -> str | None:
    """The experiment's page on the tracking server `uri` (None: no such experiment there), or a
    `TrackingError` when the server does not answer."""
    from auxcli.tracking import display_uri

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")  # fail fast, as `auxcli run` does
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        return experiment_link(uri, experiment, uri)
    except Exception as exc:  # MLflow raises many types for unreachable servers
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise TrackingError(f"the tracking server {display_uri(uri)} does not answer ({type(exc).__name__}: "
                            f"{first}). Check the URI (--tracking-uri or MLFLOW_TRACKING_URI) and that the "
                            "server runs.") from None


def experiment_link(uri: str, experiment: str, url: str) -> str | None:
    """The UI's address of the experiment's runs, shown as model training (None: no such experiment).

    MLflow 3's UI opens an experiment as GenAI (traces) unless its `mlflow.experimentKind` tag says model
    training or the link carries `workflowType=machine_learning`; an experiment recorded before auxcli
    set the tag gets it here."""
    from mlflow.tracking import MlflowClient

    from auxcli.tracking import ensure_experiment, ui_url

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(experiment) is None:
        return None
    return ui_url(url, ensure_experiment(client, experiment))


def serve_ui(uri: str, host: str, port: int, on_ready: Callable[[str], object]) -> int:
    """Start the server, call `on_ready(url)`, wait until Ctrl-C (SIGINT) or SIGTERM, stop it cleanly.

    Returns the server's exit code. The SIGTERM handler is in place before the server starts, so no
    signal can leave an orphaned server behind.
    """
    def _interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _interrupt)
    proc = None
    try:
        proc, url = start_ui(uri, host, port)
        on_ready(url)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if proc is not None:
            stop_ui(proc)
        signal.signal(signal.SIGTERM, previous)
    return proc.returncode if proc is not None else 0


def stop_ui(proc: subprocess.Popen, timeout_s: float = 15.0) -> int:
    """SIGTERM the server's process group, SIGKILL it if it lingers; returns the exit code."""
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout_s)
    log = _LOGS.pop(proc.pid, None)
    if log is not None:
        log.close()
    return proc.returncode


def _log_text(proc: subprocess.Popen) -> str:
    log = _LOGS.get(proc.pid)
    if log is None:
        return ""
    log.flush()
    with open(log.name, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the group this module created with start_new_session
    except ProcessLookupError:
        pass


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no user
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def listen_url(host: str, port: int) -> str:
    """The address the server really listens on (`http://0.0.0.0:5000` means every interface)."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it resolves to whatever DNS says, so treat it as exposed
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """The warning `auxcli ui` prints before binding a non-loopback address; None for loopback."""
    if is_loopback(host):
        return None
    reach = "every network interface of this machine" if host in ("0.0.0.0", "::") else host
    return (f"warning: --host {host} makes the MLflow UI reachable on {reach}, port {port}. It has no "
            "authentication: anyone who can reach that address can read, change and delete every run in the "
            "store. Use the default 127.0.0.1 (and an SSH tunnel) unless this network is trusted.")


def _die_with_parent(parent_pid: int) -> None:
    """In the server process before exec: get SIGTERM when `auxcli ui` dies, even by SIGKILL (Linux prctl
    PR_SET_PDEATHSIG; mlflow server forwards SIGTERM to its uvicorn child). Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _url_host(host: str) -> str:
    """Where to poll a server bound to `host`: a wildcard address is reached on the loopback of its own
    family (a server on `::` may listen on IPv6 only, so 127.0.0.1 would never answer)."""
    if host == "0.0.0.0":
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
