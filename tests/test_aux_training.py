"""Training with auxiliary tasks end to end: alone (Table 4) and jointly with classification (Table 5)."""

from __future__ import annotations

import json

import mlflow
import pytest
from typer.testing import CliRunner

from auxcli.cli import app

AUX_ONLY_METRICS = {"train_aux_loss", "train_aux_acc", "test_aux_acc"}


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def store_runs(workdir):
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["auxcli"])
    return runs[runs["tags.auxcli.seed"].notna()].set_index("tags.mlflow.runName")  # seeds, not spec parents


def test_cutout_alone_reaches_high_pixel_accuracy(workdir, tiny_spec):
    spec = tiny_spec("cutout-alone", """\
task: {labels: none, aux: {kind: cutout}}
augment: {cutout: {size: 16}}
""")
    result = invoke("run", spec, "--set", "model.base_width=8",
                    "--set", "train={epochs: 4, batch_size: 32, lr: 0.05, milestones: [3]}")
    assert result.exit_code == 0, result.output
    metrics = json.loads((workdir / "runs/cutout-alone/seed-0/metrics.json").read_text())
    # A 16x16 square covers at most a quarter of the image: predicting "kept" everywhere scores ~0.8.
    assert metrics["final_test_aux_acc"] > 0.9
    run = store_runs(workdir).loc["cutout-alone-s0"]
    assert {f"metrics.{m}" for m in AUX_ONLY_METRICS | {"train_aux_miou"}} <= set(run.dropna().index)
    assert "metrics.train_acc" not in run.dropna().index  # no main head


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "augment"), [
    ("labelset", ""),
    ("crop", ""),
    ("cutout", "augment: {cutout: {size: 16}}\n"),
    ("ricap", "augment: {ricap: {beta: 0.3}}\n"),
])
def test_joint_runs_log_both_heads(workdir, tiny_spec, kind, augment):
    aux = "{kind: labelset, labels: superclass}" if kind == "labelset" else f"{{kind: {kind}}}"
    spec = tiny_spec(f"joint-{kind}", f"task: {{labels: gt, aux: {aux}}}\n{augment}")
    result = invoke("run", spec)
    assert result.exit_code == 0, result.output
    run = store_runs(workdir).loc[f"joint-{kind}-s0"].dropna()
    main = {"train_acc", "test_acc", "final_train_acc", "final_test_acc"}
    aux_metrics = AUX_ONLY_METRICS | {"final_train_aux_acc", "final_test_aux_acc"}
    assert {f"metrics.{m}" for m in main | aux_metrics} <= set(run.index)
    for name in main | aux_metrics - {"train_aux_loss"}:
        assert 0.0 <= run[f"metrics.{name}"] <= 1.0, name
    assert run["params.task.aux.kind"] == kind
