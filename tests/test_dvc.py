"""The DVC pipeline with real DVC commands in a real git repository: what a DVC user does with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auxcli.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("dvc") is None, reason="dvc not installed")]

GIT_ENV = {"DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

# One epoch of a 4-channel depth-8 ResNet on 400 generated images: the smallest run that is still a run.
TINY_SUITE_SPEC = """\
name: tiny-table1-gt
data: {dataset: synthetic, root: data, synthetic: {train_per_class: 4, test_per_class: 2}}
model: {backbone: resnet, depth: 8, base_width: 4}
train: {epochs: 1, batch_size: 64, milestones: [], eval_batch_size: 200}
runtime: {threads: 1}
"""


def sh(*args: str, cwd) -> str:
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def cli(*args: str) -> str:
    """auxcli in this process (no interpreter start-up), from the current directory."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def numbers_only(tree) -> bool:
    """Every leaf of a (nested) metrics mapping is a number."""
    if isinstance(tree, dict):
        return all(numbers_only(v) for v in tree.values())
    return isinstance(tree, int | float) and not isinstance(tree, bool)


def _tiny_suite_repo(root: Path) -> None:
    """A git + DVC project whose params.yaml picks suite `tiny` (specs/tiny/), with a local DVC remote."""
    (root / "specs/tiny").mkdir(parents=True)
    (root / "specs/tiny/tiny-table1-gt.yaml").write_text(TINY_SUITE_SPEC)
    (root / "params.yaml").write_text("suite: tiny\nseeds: [0]\ntrain:\n  epochs: 1\n")
    (root / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "init", "-q", cwd=root)
    sh("dvc", "remote", "add", "-d", "local", str(root.parent / "remote"), cwd=root)


def test_dvc_users_compare_push_pull_and_run_temporary_experiments(workdir, monkeypatch):
    from mlflow.tracking import MlflowClient

    repo = workdir / "project"
    repo.mkdir()
    _tiny_suite_repo(repo)
    monkeypatch.chdir(repo)
    cli("pipeline")
    assert "cmd: auxcli data prepare specs/tiny --params params.yaml --suite tiny" in (repo / "dvc.yaml").read_text()
    sh("dvc", "repro", cwd=repo)
    lock = (repo / "dvc.lock").read_text()
    assert "path: data\n" in lock and ".dir" in lock  # dvc.lock pins the data folder's md5
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline", cwd=repo)
    assert "results/metrics/tiny-table1-gt/seed-0.json" in sh("git", "ls-files", cwd=repo)  # git carries results
    plots = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo))
    assert not plots.get("errors"), plots.get("errors")
    accuracy = plots["data"]["tiny-table1-gt-s0 accuracy"][0]["content"]["data"]["values"]
    assert {point["field"] for point in accuracy} == {"train_acc", "test_acc"}

    # A collaborator: git clone + dvc pull gives a finished workspace without the MLflow store.
    sh("dvc", "push", cwd=repo)
    clone = workdir / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=workdir)
    sh("dvc", "pull", cwd=clone)
    assert not (clone / "mlflow.db").exists()
    monkeypatch.chdir(clone / "specs")  # from a subfolder: the runs at the top of the repository
    assert "1 done" in cli("plan", "tiny")
    monkeypatch.chdir(clone)
    report = cli("report", "specs/tiny")
    assert "Table 1" in report and "run folders" in report
    output = sh("dvc", "repro", cwd=clone)
    assert "Data and pipelines are up to date" in output and "Running stage" not in output

    # A temporary experiment runs in a copy under .dvc/tmp/exps yet records in the user's MLflow store,
    # and a training knob never re-prepares the data.
    output = sh("dvc", "exp", "run", "--temp", "-n", "templr", "-S", "+train.lr=0.05", cwd=repo)
    assert "Stage 'data' didn't change" in output and "Running stage 'tiny-table1-gt'" in output
    client = MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    runs = [r for r in runs if "auxcli.seed" in r.data.tags]  # the seeds' runs, not their specs' parents
    assert sorted(r.data.params["train.lr"] for r in runs) == ["0.05", "0.1"]
    assert not list((repo / ".dvc").rglob("mlflow.db"))

    # DVC shows and compares numeric final metrics for the baseline and the experiment.
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo))
    baseline = next(row for row in shown if row["rev"] != "workspace")  # the commit the experiment started from
    experiments = {exp["name"]: exp for run in baseline.get("experiments") or [] for exp in run["revs"]}
    assert list(experiments) == ["templr"], experiments.keys()
    for row in (baseline, experiments["templr"]):
        metrics = row["data"]["metrics"]
        run = metrics["results/metrics/tiny-table1-gt/seed-0.json"]["data"]
        assert numbers_only(run) and 0.0 <= run["final_test_acc"] <= 1.0
    sh("dvc", "exp", "apply", "templr", cwd=repo)
    diff = json.loads(sh("dvc", "metrics", "diff", "--all", "--json", cwd=repo))
    compared = diff.get("diff", diff)["results/metrics/tiny-table1-gt/seed-0.json"]["final_test_acc"]
    assert isinstance(compared["old"], float) and isinstance(compared["new"], float)
