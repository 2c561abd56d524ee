"""No finished result lost, no stale result reused (issue 9): real `auxcli run` processes killed at the
dangerous moments (test pause points, `auxcli/testhooks.py`), the run-folder lock, concurrent store
creation, stale specs and the repair of incomplete records, all checked in a real MLflow store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auxcli.cli import app
from tests.conftest import wait_for_line

pytestmark = pytest.mark.slow

SPEC = """\
name: k
data: {{dataset: synthetic, root: {root}, synthetic: {{train_per_class: 1, test_per_class: 1}}}}
model: {{backbone: resnet, depth: 8, base_width: 4}}
train: {{epochs: {epochs}, batch_size: 50, milestones: [], eval_batch_size: 100}}
runtime: {{threads: 1}}
"""
PAUSED = "auxcli-test-paused-at"


def write_spec(workdir: Path, epochs: int = 2) -> Path:
    path = workdir / "k.yaml"
    path.write_text(SPEC.format(root=(workdir / "data").as_posix(), epochs=epochs))
    return path


def env(pause: str | None = None) -> dict[str, str]:
    out = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "AUXCLI_TEST_PAUSE_SECONDS": "120"}
    out.pop("AUXCLI_TEST_PAUSE_AT", None)
    if pause:
        out["AUXCLI_TEST_PAUSE_AT"] = pause
    return out


def auxcli(*args: str, pause: str | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "auxcli", *args], env=env(pause), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_pause(proc: subprocess.Popen, point: str, timeout_s: float = 180) -> str:
    """Read the process's output until it reports the pause point; returns what it printed."""
    return wait_for_line(proc, f"{PAUSED} {point}", timeout_s)


def kill_at(workdir: Path, point: str, sig: int = signal.SIGKILL) -> None:
    proc = auxcli("run", "k.yaml", pause=point)
    wait_for_pause(proc, point)
    proc.send_signal(sig)
    proc.wait(60)


def finish(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "auxcli", "run", "k.yaml", *args], env=env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    return done.stdout


def runs(workdir: Path, *, parents: bool = False):
    """The store's seed runs (with `parents`, the specs' parent runs too)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("auxcli")
    found = client.search_runs([experiment.experiment_id]) if experiment else []
    return client, [run for run in found if parents or "auxcli.seed" in run.data.tags]


def assert_recorded_once(workdir: Path, epochs: int) -> str:
    """Exactly one FINISHED run with every artifact and each epoch once; every other run ended; the
    folder is complete. Returns the finished run's id."""
    client, everything = runs(workdir, parents=True)
    assert all(run.info.status in ("FINISHED", "KILLED", "FAILED") for run in everything), \
        [run.info.status for run in everything]
    found = [run for run in everything if "auxcli.seed" in run.data.tags]
    finished = [run for run in found if run.info.status == "FINISHED"]
    assert len(finished) == 1
    run_id = finished[0].info.run_id
    steps = [m.step for m in client.get_metric_history(run_id, "train_loss")]
    assert sorted(steps) == list(range(1, epochs + 1)), steps
    artifacts = {a.path for sub in (None, "model") for a in client.list_artifacts(run_id, sub)}
    assert {"spec.resolved.yaml", "history.csv", "metrics.json", "model/final.pt"} <= artifacts
    folder = workdir / "runs" / "k" / "seed-0"
    assert (folder / "complete.json").exists() and not list(folder.glob(".*.tmp"))
    return run_id


def test_sigkills_at_every_dangerous_moment_lose_nothing_and_log_each_epoch_once(workdir):
    write_spec(workdir)
    kill_at(workdir, "before-epoch")  # epoch 1: an MLflow run RUNNING, no last.pt yet
    kill_at(workdir, "after-checkpoint")  # epoch 1's last.pt saved, its metrics not yet logged
    kill_at(workdir, "after-metrics")  # epoch 2 trained: metrics.json written, no artifacts
    assert "0:incomplete" in CliRunner().invoke(app, ["plan", "k.yaml"]).output
    kill_at(workdir, "during-artifacts")  # the repair killed halfway through the artifacts
    kill_at(workdir, "before-marker")  # the repair killed after closing the run, before complete.json
    out = finish()
    assert "without retraining" in out and " epoch " not in out
    assert_recorded_once(workdir, epochs=2)
    assert "0:done" in CliRunner().invoke(app, ["plan", "k.yaml"]).output
    again = CliRunner().invoke(app, ["run", "k.yaml"])
    assert again.exit_code == 0 and "complete" in again.output  # a finished run is left alone


def test_second_process_is_refused_and_two_sigterms_end_the_run_killed(workdir):
    write_spec(workdir)
    holder = auxcli("run", "k.yaml", pause="before-epoch")
    wait_for_pause(holder, "before-epoch")
    second = subprocess.run([sys.executable, "-m", "auxcli", "run", "k.yaml"], env=env(), capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"pid {holder.pid}" in second.stderr and "Traceback" not in second.stderr
    holder.send_signal(signal.SIGTERM)
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(60) == 128 + signal.SIGTERM
    _, found = runs(workdir)
    assert [run.info.status for run in found] == ["KILLED"]


def test_concurrent_runs_create_one_store_and_all_are_recorded(workdir):
    script = ("import sys\nfrom auxcli.tracking import RunTracker\nt = RunTracker(None, 'auxcli')\n"
              "t.start(f'r{sys.argv[1]}', {}, {'i': sys.argv[1]})\nt.log_metrics({'x': 1.0}, 1)\nt.end('FINISHED')\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i)], env=env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(4)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    _, found = runs(workdir, parents=True)  # plain RunTracker runs, no auxcli tags
    assert sorted(run.info.run_name for run in found) == ["r0", "r1", "r2", "r3"]
    assert {run.info.status for run in found} == {"FINISHED"}
    assert not list(workdir.glob(".mlflow.db.init-*"))


# ---------------------------------------------------------------------------------------------- in-process

def test_changed_spec_is_refused_with_a_diff_then_force_replaces_it(workdir):
    write_spec(workdir, epochs=1)
    runner = CliRunner()
    first = runner.invoke(app, ["run", "k.yaml"])
    assert first.exit_code == 0, first.output
    changed = runner.invoke(app, ["run", "k.yaml", "--set", "train.lr=0.01"])
    assert changed.exit_code == 2, changed.output
    assert "train.lr: 0.1 -> 0.01" in changed.output and "--force" in changed.output
    assert "--set name=" in changed.output and "Traceback" not in changed.output
    assert "0:stale" in runner.invoke(app, ["plan", "k.yaml", "--set", "train.lr=0.01"]).output
    assert "0:done" in runner.invoke(app, ["plan", "k.yaml"]).output
    forced = runner.invoke(app, ["run", "k.yaml", "--set", "train.lr=0.01", "--force"])
    assert forced.exit_code == 0, forced.output
    assert "lr: 0.01" in (workdir / "runs/k/seed-0/spec.resolved.yaml").read_text()


def test_artifact_failure_leaves_an_incomplete_record_that_a_rerun_repairs(workdir, monkeypatch):
    import errno

    from auxcli.tracking import RunTracker

    write_spec(workdir, epochs=1)
    real = RunTracker.log_artifacts

    def too_long(self, paths, subdir=None):
        raise OSError(errno.ENAMETOOLONG, "File name too long", str(paths[0]))

    monkeypatch.setattr(RunTracker, "log_artifacts", too_long)
    failed = CliRunner().invoke(app, ["run", "k.yaml"])
    assert failed.exit_code == 2 and "ENAMETOOLONG" in failed.output and "Traceback" not in failed.output
    _, found = runs(workdir)
    assert [run.info.status for run in found] == ["FAILED"]
    monkeypatch.setattr(RunTracker, "log_artifacts", real)
    repaired = CliRunner().invoke(app, ["run", "k.yaml"])
    assert repaired.exit_code == 0, repaired.output
    assert "without retraining" in repaired.output and "epoch 1/1" not in repaired.output
    run_id = assert_recorded_once(workdir, epochs=1)
    assert run_id == found[0].info.run_id  # completed in the same MLflow run


def test_repair_into_a_new_run_when_the_store_lost_it(workdir):
    write_spec(workdir, epochs=1)
    runner = CliRunner()
    assert runner.invoke(app, ["run", "k.yaml"]).exit_code == 0
    (workdir / "runs/k/seed-0/complete.json").unlink()
    (workdir / "mlflow.db").unlink()
    repaired = runner.invoke(app, ["run", "k.yaml"])
    assert repaired.exit_code == 0, repaired.output
    run_id = assert_recorded_once(workdir, epochs=1)
    client, _ = runs(workdir)
    assert client.get_run(run_id).data.tags["auxcli.repaired_from"]
    assert run_id in (workdir / "runs/k/seed-0/metrics.json").read_text()
    # the logged model, pytorch flavour included, is rebuilt from final.pt: nothing of the lost store is needed
    (output,) = client.get_run(run_id).outputs.model_outputs
    assert "MLmodel" in {a.path for a in client.list_logged_model_artifacts(output.model_id)}


def test_stale_temporary_files_are_removed(workdir):
    write_spec(workdir, epochs=1)
    folder = workdir / "runs" / "k" / "seed-0"
    folder.mkdir(parents=True)
    (folder / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    assert CliRunner().invoke(app, ["run", "k.yaml"]).exit_code == 0
    assert not list(folder.glob(".*.tmp"))


def test_sigterm_during_a_write_waits_for_it_and_ends_the_run_killed(workdir):
    """SIGTERM while an epoch is being recorded (paused 3 s after last.pt, before its MLflow metrics):
    the write finishes, then the run ends KILLED (exit 143) with that epoch in MLflow exactly once."""
    write_spec(workdir)
    proc = subprocess.Popen([sys.executable, "-m", "auxcli", "run", "k.yaml"],
                            env={**env("after-checkpoint"), "AUXCLI_TEST_PAUSE_SECONDS": "3"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_pause(proc, "after-checkpoint")
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in output, output
    client, found = runs(workdir)
    assert [run.info.status for run in found] == ["KILLED"]
    assert [m.step for m in client.get_metric_history(found[0].info.run_id, "train_loss")] == [1]
