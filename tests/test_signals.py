"""Every command that opens an MLflow run handles signals (issue 21): SIGTERM or Ctrl-C during `analyze`
or `report --plots` ends their run KILLED with exit 143/130, and a run whose process was SIGKILLed is
marked KILLED by the next such command. Real processes, paused with their run open (auxcli/testhooks.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auxcli.cli import app
from tests.conftest import project_folder, wait_for_line

pytestmark = pytest.mark.slow
SPEC = """\
name: k
data: {{dataset: synthetic, root: {root}, synthetic: {{train_per_class: 1, test_per_class: 1}}}}
model: {{backbone: resnet, depth: 8, base_width: 4}}
train: {{epochs: 1, batch_size: 50, milestones: [], eval_batch_size: 100}}
runtime: {{threads: 1}}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    with project_folder(root):
        (root / "k.yaml").write_text(SPEC.format(root=(root / "data").as_posix()))
        result = CliRunner().invoke(app, ["run", "k.yaml"])
        assert result.exit_code == 0, result.output
    return root


def start(project: Path, pause: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "AUXCLI_TEST_PAUSE_AT": pause,
           "AUXCLI_TEST_PAUSE_SECONDS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "auxcli", *args], cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    wait_for_line(proc, f"auxcli-test-paused-at {pause}")
    return proc


def runs_tagged(project: Path, experiment: str, tag: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    found = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([found.experiment_id]) if r.data.tags.get(tag) == "true"] if found else []


@pytest.mark.parametrize("command, pause, experiment, tag", [
    (["analyze", "runs/k/seed-0", "--out", "an"], "analysis-run-open", "auxcli-analysis", "auxcli.analysis"),
    (["report", "--plots", "--out", "rep"], "report-run-open", "auxcli-reports", "auxcli.report"),
], ids=["analyze", "report-plots"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_commands_run_killed(project, command, pause, experiment, tag, sig):
    before = {r.info.run_id for r in runs_tagged(project, experiment, tag)}
    proc = start(project, pause, *command)
    proc.send_signal(sig)
    proc.send_signal(sig)  # a second one while closing is ignored
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + sig, output
    assert "Traceback" not in output and "Interrupted by" in output
    new = [r for r in runs_tagged(project, experiment, tag) if r.info.run_id not in before]
    assert [r.info.status for r in new] == ["KILLED"]


def test_a_sigkilled_analysis_run_is_marked_killed_by_the_next_one(project):
    proc = start(project, "analysis-run-open", "analyze", "runs/k/seed-0", "--out", "an2")
    proc.kill()
    proc.wait(60)
    orphan = [r for r in runs_tagged(project, "auxcli-analysis", "auxcli.analysis") if r.info.status == "RUNNING"]
    assert len(orphan) == 1
    done = subprocess.run([sys.executable, "-m", "auxcli", "analyze", "runs/k/seed-0", "--out", "an3"], cwd=project,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = {r.info.run_id: r.info.status for r in runs_tagged(project, "auxcli-analysis", "auxcli.analysis")}
    assert statuses[orphan[0].info.run_id] == "KILLED" and "RUNNING" not in statuses.values()
