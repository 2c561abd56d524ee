"""`auxcli run` end to end on generated data with a tiny ResNet: outputs, MLflow, resume, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
import torch
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.train import runner as runner_module

EPOCH_METRICS = {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds", "images_per_second"}
SUMMARY_METRICS = {"final_train_acc", "final_test_acc", "best_test_acc"}


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def runs_in_store(workdir, experiment: str = "auxcli"):
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[experiment])
    return runs[runs["tags.auxcli.seed"].notna()].reset_index(drop=True)  # seeds, not spec parents


def final_weights(path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return {**{f"backbone.{k}": v for k, v in state["backbone"].items()},
            **{f"{h}.{k}": v for h, head in state["heads"].items() for k, v in head.items()}}


def test_run_writes_run_folder_and_one_finished_mlflow_run_per_seed(workdir, tiny_spec):
    spec = tiny_spec("two-seeds", "")
    result = invoke("run", spec, "--set", "seeds=[0, 1]")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()  # no terminal: one line as each run starts, before its first epoch
    started = [i for i, line in enumerate(lines) if line.startswith("two-seeds-s0: starting epoch 1/2")]
    assert started and started[0] < next(i for i, line in enumerate(lines) if "two-seeds-s0 epoch 1/2" in line)
    start = lines[started[0]]
    run_id = json.loads((workdir / "runs/two-seeds/seed-0/metrics.json").read_text())["mlflow_run_id"]
    assert "seed 0" in start and "400 training images" in start and "device cpu" in start and run_id in start

    for seed in (0, 1):
        folder = workdir / "runs" / "two-seeds" / f"seed-{seed}"
        for name in ("spec.resolved.yaml", "history.csv", "metrics.json", "last.pt", "final.pt"):
            assert (folder / name).is_file(), name
        metrics = json.loads((folder / "metrics.json").read_text())
        assert SUMMARY_METRICS <= metrics.keys()
        assert 0.0 <= metrics["final_test_acc"] <= 1.0
        assert len((folder / "history.csv").read_text().splitlines()) == 1 + 2  # header + one row per epoch
        assert "seeds:\n- 0\n- 1" in (folder / "spec.resolved.yaml").read_text()  # the resolved spec

    runs = runs_in_store(workdir)
    assert sorted(runs["tags.mlflow.runName"]) == ["two-seeds-s0", "two-seeds-s1"]
    assert set(runs["status"]) == {"FINISHED"}
    assert set(runs["tags.auxcli.spec_name"]) == {"two-seeds"}
    assert runs["tags.auxcli.spec_sha256"].str.len().eq(64).all()
    assert {f"metrics.{m}" for m in EPOCH_METRICS | SUMMARY_METRICS} <= set(runs.columns)
    assert set(runs["params.train.lr"]) == {"0.1"}
    history = mlflow.MlflowClient().get_metric_history(runs["run_id"][0], "test_acc")
    assert [m.step for m in history] == [1, 2]


def test_rerunning_a_finished_run_does_no_training(workdir, tiny_spec):
    spec = tiny_spec("again")
    assert invoke("run", spec).exit_code == 0
    history = workdir / "runs" / "again" / "seed-0" / "history.csv"
    before = history.stat().st_mtime_ns

    result = invoke("run", spec)
    assert result.exit_code == 0
    assert "complete" in result.output
    assert history.stat().st_mtime_ns == before
    assert len(runs_in_store(workdir)) == 1

    result = invoke("run", spec, "--force")
    assert result.exit_code == 0
    assert history.stat().st_mtime_ns != before
    assert len(runs_in_store(workdir)) == 2


def test_random_labels_are_fitted_far_above_chance(workdir, tiny_spec):
    # 100 random classes on 200 images: only memorisation can fit them (Zhang et al. 2017).
    spec = tiny_spec("memorise", """\
task: {labels: random}
augment: {crop: null, flip: false}
""")
    result = invoke("run", spec, "--set", "data.synthetic.train_per_class=2", "--set", "model.base_width=16",
                    "--set", "train={epochs: 25, batch_size: 25, lr: 0.05, milestones: [20]}")
    assert result.exit_code == 0, result.output
    metrics = json.loads((workdir / "runs/memorise/seed-0/metrics.json").read_text())
    assert metrics["final_train_acc"] > 0.5  # chance is 0.01


def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(workdir, tiny_spec, monkeypatch):
    spec = tiny_spec("resume")
    deterministic = ("--set", "runtime.deterministic=true")
    assert invoke("run", spec, *deterministic, "--set", "runtime.runs_dir=straight").exit_code == 0

    real_epoch = runner_module._one_epoch

    def interrupted_in_epoch_two(epoch, *args, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(epoch, *args, **kwargs)

    monkeypatch.setattr(runner_module, "_one_epoch", interrupted_in_epoch_two)
    result = invoke("run", spec, *deterministic, "--set", "runtime.runs_dir=resumed")
    assert result.exit_code == 130
    assert "Traceback" not in result.output
    assert not (workdir / "resumed/resume/seed-0/metrics.json").exists()
    killed = runs_in_store(workdir)
    assert "KILLED" in set(killed["status"])
    killed_id = killed.loc[killed["status"] == "KILLED", "run_id"].item()
    parent_id = mlflow.MlflowClient().get_run(killed_id).data.tags["mlflow.parentRunId"]
    assert mlflow.MlflowClient().get_run(parent_id).info.status == "KILLED"  # the spec's parent says so too

    monkeypatch.setattr(runner_module, "_one_epoch", real_epoch)
    result = invoke("run", spec, *deterministic, "--set", "runtime.runs_dir=resumed")
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 1" in result.output

    straight = final_weights(workdir / "straight/resume/seed-0/final.pt")
    resumed = final_weights(workdir / "resumed/resume/seed-0/final.pt")
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    a = json.loads((workdir / "straight/resume/seed-0/metrics.json").read_text())
    b = json.loads((workdir / "resumed/resume/seed-0/metrics.json").read_text())
    for key in ("final_train_acc", "final_test_acc", "final_train_loss", "final_test_loss"):
        assert a[key] == b[key], key

    runs = runs_in_store(workdir)
    resumed_run = runs[runs["run_id"] == b["mlflow_run_id"]]
    assert list(resumed_run["status"]) == ["FINISHED"]  # the same MLflow run continued
    steps = mlflow.MlflowClient().get_metric_history(b["mlflow_run_id"], "train_loss")
    assert sorted(m.step for m in steps) == [1, 2]
    parent = mlflow.MlflowClient().get_run(parent_id)  # the resumed run finished its spec's parent
    assert parent.info.status == "FINISHED" and parent.data.metrics["final_test_acc"] == b["final_test_acc"]


@pytest.mark.slow
def test_sigterm_keeps_last_checkpoint_and_marks_run_killed(workdir, tiny_spec):
    spec = tiny_spec("terminated")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "auxcli", "run", str(spec), "--set", "train.epochs=200",
                                "--set", "train.milestones=[100]"], cwd=workdir, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = workdir / "runs/terminated/seed-0/last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert last.exists(), process.communicate()[0] if process.poll() is not None else "no last.pt in time"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output
    assert "Traceback" not in output
    state = torch.load(last, weights_only=True)
    assert state["epoch"] >= 1
    assert list(runs_in_store(workdir)["status"]) == ["KILLED"]


def test_corrupt_checkpoint_is_a_clear_error(workdir, tiny_spec):
    spec = tiny_spec("corrupt")
    last = workdir / "runs/corrupt/seed-0/last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"not a checkpoint")
    result = invoke("run", spec)
    assert result.exit_code == 2
    assert "last.pt" in result.output and "cannot read" in result.output
    assert "Traceback" not in result.output
    assert last.read_bytes() == b"not a checkpoint"  # left for the user to inspect


def test_diverging_loss_stops_and_marks_the_run_failed(workdir, tiny_spec):
    spec = tiny_spec("diverge")
    result = invoke("run", spec, "--set", "train.lr=1e30")
    assert result.exit_code == 1, result.output
    assert "epoch 1" in result.output
    assert not (workdir / "runs/diverge/seed-0/metrics.json").exists()
    assert list(runs_in_store(workdir)["status"]) == ["FAILED"]


def test_unwritable_run_folder_is_a_clear_error(workdir, tiny_spec):
    (workdir / "blocker").write_text("a file where a folder should be")
    result = invoke("run", tiny_spec("blocked"), "--set", "runtime.runs_dir=blocker/runs")
    assert result.exit_code == 2
    assert "cannot be written" in result.output


def test_unreachable_tracking_server_is_a_clear_error(workdir, tiny_spec):
    result = invoke("run", tiny_spec("offline"), "--set", "tracking.uri=http://127.0.0.1:9")
    assert result.exit_code == 2
    assert "http://127.0.0.1:9" in result.output
    assert "Traceback" not in result.output
    assert not (workdir / "runs/offline/seed-0/last.pt").exists()


def test_missing_cifar_data_is_a_clear_error(workdir, tiny_spec):
    result = invoke("run", tiny_spec("nodata"), "--set", "data={dataset: cifar100, root: empty, download: false}")
    assert result.exit_code == 2
    assert "cifar-100-python" in result.output
    assert "Traceback" not in result.output
