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
    accuracy = plots["data"]["tiny-table1 test_acc"][0]["content"]
    assert {point["epoch"] for point in accuracy["data"]["values"]} == {"1"}  # whole epochs, on a whole-epoch axis
    assert accuracy["encoding"]["x"]["axis"]["tickMinStep"] == 1

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
        assert list(metrics) == ["results/summary.json"]  # one small file, not one per run
        cell = metrics["results/summary.json"]["data"]["tiny-table1-gt"]
        assert numbers_only(cell) and 0.0 <= cell["mean"] <= 1.0 and cell["n"] == 1 and "std" not in cell
    sh("dvc", "exp", "apply", "templr", cwd=repo)
    diff = json.loads(sh("dvc", "metrics", "diff", "--all", "--json", cwd=repo))
    compared = diff.get("diff", diff)["results/summary.json"]["tiny-table1-gt.mean"]
    assert isinstance(compared["old"], float) and isinstance(compared["new"], float)
    run = json.loads((repo / "results/metrics/tiny-table1-gt/seed-0.json").read_text())  # still every number
    assert {"final_test_acc", "final_train_loss", "final_test_loss", "best_test_acc", "best_epoch"} <= set(run)


def test_exp_show_fits_200_columns_and_names_the_changed_summary_cells(workdir, monkeypatch):
    """Issue 19: after one `dvc exp run -S`, `dvc exp show --only-changed` is readable in a 200-column
    terminal and `dvc metrics diff` shows the changed cells (a suite like mini: a classifier and an
    auxiliary-only spec, two seeds)."""
    repo = workdir / "project"
    (repo / "specs/tiny").mkdir(parents=True)
    (repo / "specs/tiny/tiny-table1-gt.yaml").write_text(TINY_SUITE_SPEC)
    (repo / "specs/tiny/tiny-table4-crop.yaml").write_text(
        TINY_SUITE_SPEC.replace("tiny-table1-gt", "tiny-table4-crop") + "task: {labels: none, aux: {kind: crop}}\n")
    (repo / "params.yaml").write_text("suite: tiny\nseeds: [0, 1]\ntrain:\n  epochs: 1\n  lr: 0.1\n")
    (repo / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    sh("git", "init", "-q", cwd=repo)
    sh("dvc", "init", "-q", cwd=repo)
    monkeypatch.chdir(repo)
    cli("pipeline")
    sh("dvc", "repro", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline", cwd=repo)
    before = json.loads((repo / "results/summary.json").read_text())
    sh("dvc", "exp", "run", "-n", "lr05", "-S", "train.lr=0.05", cwd=repo)
    after = json.loads((repo / "results/summary.json").read_text())
    assert set(before) == set(after) == {"tiny-table1-gt", "tiny-table4-crop"}
    changed = {f"{name}.{key}" for name in before for key in before[name] if before[name][key] != after[name][key]}
    unchanged = {f"{name}.{key}" for name in before for key in before[name]} - changed
    assert changed and unchanged >= {"tiny-table1-gt.n", "tiny-table4-crop.n"}

    monkeypatch.setenv("COLUMNS", "200")
    shown = sh("dvc", "exp", "show", "--only-changed", "--no-pager", cwd=repo)
    width = max(len(line) for line in shown.splitlines())
    assert width <= 200, shown
    header = next(line for line in shown.splitlines() if "Experiment" in line).split()
    assert changed | {"train.lr"} <= set(header), shown  # every changed cell by name, and the knob
    assert not unchanged & set(header) and not any(h.startswith(("final_", "best_")) for h in header)

    diff = json.loads(sh("dvc", "metrics", "diff", "HEAD", "lr05", "--json", cwd=repo))
    assert set(diff.get("diff", diff)["results/summary.json"]) == changed

    # Back to the baseline (as after `git checkout` + `dvc checkout`): every view of the workspace agrees on
    # its results although the store also holds the experiment's runs (issue 19, "one commit, one table").
    sh("git", "checkout", "--", "params.yaml", "dvc.lock", "results", cwd=repo)
    sh("dvc", "checkout", "--force", cwd=repo)
    assert json.loads((repo / "results/summary.json").read_text()) == before
    shown_metrics = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo))
    metrics = shown_metrics[""]["data"]["results/summary.json"]["data"] if "" in shown_metrics else \
        shown_metrics["workspace"]["data"]["results/summary.json"]["data"]
    assert metrics == before

    def cells(report_json: str) -> dict[str, tuple[float, int]]:
        """spec name -> (value, n) of its cell in its own study table (Table 1: train, Table 4: aux train)."""
        found = {}
        for table in json.loads(report_json)["tables"]:
            for row in table["rows"]:
                if row["n"] and row["key"].startswith(table["id"] + "-"):
                    column = "test" if "test" in row["values"] else "train"
                    found[row["spec_name"]] = (row["values"][column], row["n"])
        return found

    expected = {name: (cell["mean"], cell["n"]) for name, cell in before.items()}
    assert cells(cli("report", "-f", "json")) == expected  # the workspace's results, not the latest runs
    assert cells(cli("report", "specs/tiny", "--params", "params.yaml", "-f", "json")) == expected
    sh("dvc", "remote", "add", "-d", "local", str(workdir / "remote"), cwd=repo)
    sh("git", "commit", "-qm", "remote", ".dvc/config", cwd=repo)
    sh("dvc", "push", cwd=repo)
    clone = workdir / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=workdir)
    sh("dvc", "pull", cwd=clone)
    monkeypatch.chdir(clone)
    assert cells(cli("report", "specs/tiny", "--params", "params.yaml", "-f", "json")) == expected
    assert cells(cli("report", "-f", "json", "--tracking-uri", f"sqlite:///{clone / 'mlflow.db'}")) == expected
