"""Nothing executed from data or names (issue 9): dvc.yaml command lines, report text, the UI's exposure."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auxcli.cli import app
from tests.conftest import wait_for_line

runner = CliRunner()


def test_pipeline_cmd_quotes_hostile_file_names(workdir):
    """A spec file named with `$(...)` and a space is one argument under a real shell, never code."""
    import shlex

    from ruamel.yaml import YAML

    hostile = workdir / "specs" / "$(touch PWNED) a b.yaml"
    hostile.parent.mkdir()
    hostile.write_text("name: hostile\n")
    result = runner.invoke(app, ["pipeline", "specs", "--params", "my params.yaml"])
    assert result.exit_code == 0, result.output
    cmd = YAML(typ="safe").load((workdir / "dvc.yaml").read_text())["stages"]["hostile"]["cmd"]
    fake = workdir / "bin" / "auxcli"
    fake.parent.mkdir()
    fake.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    done = subprocess.run(["bash", "-c", cmd], cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    calls = [json.loads(line) for line in done.stdout.splitlines()]
    assert calls[0][:4] == ["run", "specs/$(touch PWNED) a b.yaml", "--params", "my params.yaml"]
    assert all("specs/$(touch PWNED) a b.yaml" in call for call in calls)
    assert shlex.split(cmd)[2] == "specs/$(touch PWNED) a b.yaml"
    assert not (workdir / "PWNED").exists()


def _hostile_store(workdir: Path, name: str) -> None:
    from mlflow.tracking import MlflowClient

    from auxcli.tracking import RunTracker

    tracker = RunTracker(None, "auxcli")
    client = MlflowClient(tracking_uri=tracker.uri)
    run = client.create_run(tracker.experiment_id, run_name=name, tags={"auxcli.spec_name": name, "auxcli.seed": "0"})
    for key in ("final_train_acc", "final_test_acc"):
        client.log_metric(run.info.run_id, key, 0.5)
    client.set_terminated(run.info.run_id, "FINISHED")
    killed = client.create_run(tracker.experiment_id, run_name=name, tags={"auxcli.spec_name": name})
    client.set_terminated(killed.info.run_id, "KILLED")  # its name goes into the footer


HOSTILE = "x|y\n# Injected heading\n\\input{/etc/passwd}%"


def test_report_text_cannot_inject_markdown_or_latex(workdir):
    _hostile_store(workdir, HOSTILE)
    github = runner.invoke(app, ["report", "--format", "github"])
    assert github.exit_code == 0, github.output
    lines = github.output.splitlines()
    assert not any(line.startswith("# Injected") for line in lines)
    rows = [line for line in lines if line.startswith("|")]
    assert rows and len({line.count("|") - line.count("\\|") for line in rows}) == 1  # no extra column
    latex = runner.invoke(app, ["report", "--format", "latex"])
    assert latex.exit_code == 0, latex.output
    assert "\\input{" not in latex.output and "\\textbackslash{}input\\{/etc/passwd\\}\\%" in latex.output
    assert all(line.startswith(("%", "\\", " ")) or "&" in line or not line.strip()
               for line in latex.output.splitlines()), latex.output
    text = runner.invoke(app, ["report"])
    assert not any(line.startswith("# Injected") for line in text.output.splitlines())


@pytest.mark.parametrize(("host", "exposed"), [("127.0.0.1", False), ("127.0.0.2", False), ("::1", False),
                                               ("localhost", False), ("0.0.0.0", True), ("::", True),
                                               ("192.168.1.20", True), ("example.org", True)])
def test_ui_warns_on_every_non_loopback_host(host, exposed):
    from auxcli.ui import exposure_warning, listen_url

    warning = exposure_warning(host, 5000)
    assert (warning is not None) == exposed
    if exposed:
        assert "no authentication" in warning and host in warning
    assert host in listen_url(host, 5000)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_ui_prints_the_real_address_and_its_server_dies_with_it(workdir):
    from auxcli.tracking import RunTracker

    RunTracker(None, "auxcli")  # a store to serve
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "auxcli", "ui", "--host", "0.0.0.0", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = wait_for_line(proc, "MLflow UI for")
    assert f"http://0.0.0.0:{port}" in seen and "warning" in seen and "no authentication" in seen
    assert _answers(port)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up: the server must still go
    proc.wait(30)
    deadline = time.monotonic() + 60
    while _answers(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _answers(port), "the MLflow server outlived auxcli ui"
