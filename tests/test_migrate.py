"""`auxcli migrate` between two SQLite stores, on runs written straight through MlflowClient (no training):
bad input is one paragraph and exit 2, an interrupted copy leaves the source and the run folders as they
were and completes when run again, and nothing is ever copied twice. The copy's fidelity against a real
tracking server on PostgreSQL is tested in tests/cluster/test_server_migrate.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auxcli.cli import app


def source_store(folder: Path) -> tuple[str, dict[str, str]]:
    """A parent run and a seed run nested under it, with a metric history, an artifact and a logged model;
    and the seed's run folder naming it."""
    from mlflow.entities import LoggedModelOutput, Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'source.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("auxcli", artifact_location=(folder / "artifacts").as_uri())
    parent = client.create_run(experiment, run_name="spec", tags={"auxcli.parent": "true"}).info.run_id
    seed = client.create_run(experiment, run_name="spec-s0", tags={"mlflow.parentRunId": parent}).info.run_id
    client.log_batch(seed, metrics=[Metric("lr", 0.1 / step, 1000 + step, step) for step in (1, 2, 3)])
    (folder / "metrics.json").write_text('{"final_test_acc": 0.5}')
    client.log_artifact(seed, str(folder / "metrics.json"))
    model = client.create_logged_model(experiment, name="spec", source_run_id=seed)
    (folder / "model").mkdir()
    (folder / "model" / "final.pt").write_bytes(b"weights")
    client.log_model_artifacts(model.model_id, str(folder / "model"))
    client.finalize_logged_model(model.model_id, "READY")
    client.log_outputs(seed, [LoggedModelOutput(model.model_id, 3)])
    for run in (seed, parent):
        client.set_terminated(run, "FINISHED")
    run_folder = folder / "runs" / "spec" / "seed-0"
    run_folder.mkdir(parents=True)
    for name in ("metrics.json", "complete.json"):
        (run_folder / name).write_text(json.dumps({"mlflow_run_id": seed, "seed": 0}))
    return uri, {"parent": parent, "seed": seed}


def migrate(folder: Path, source: str, target: str):
    return CliRunner().invoke(app, ["migrate", "--from", source, "--to", target,
                                    "--runs-dir", str(folder / "runs")])


def copies(target: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=target)
    experiment = client.get_experiment_by_name("auxcli")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_bad_targets_are_refused_in_one_paragraph(workdir):
    source, _ = source_store(workdir)
    for target, words in [(source, "is the store the runs are in already"),
                          ("http://user:secret@tracking:5000", "holds a password"),
                          ("http://127.0.0.1:9", "cannot be used")]:
        result = migrate(workdir, source, target)
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output and "secret" not in result.output
    assert json.loads((workdir / "runs/spec/seed-0/complete.json").read_text())["mlflow_run_id"] in \
        {r.info.run_id for r in copies(source)}
    missing = migrate(workdir, f"sqlite:///{workdir / 'none.db'}", f"sqlite:///{workdir / 'target.db'}")
    assert missing.exit_code == 2 and "nothing to migrate" in missing.output


def test_an_interrupted_migration_changes_nothing_and_completes_when_run_again(workdir, monkeypatch):
    from mlflow.tracking import MlflowClient

    source, ids = source_store(workdir)
    target = f"sqlite:///{workdir / 'target.db'}"
    real = MlflowClient.log_artifacts

    def fail_on_the_seed(self, run_id, local_dir, artifact_path=None):  # the target goes away mid-copy
        raise ConnectionError("target went away")

    monkeypatch.setattr(MlflowClient, "log_artifacts", fail_on_the_seed)
    failed = migrate(workdir, source, target)
    assert failed.exit_code == 2 and "Re-run the same command" in failed.output, failed.output
    record = json.loads((workdir / "runs/spec/seed-0/complete.json").read_text())
    assert record["mlflow_run_id"] == ids["seed"]  # the run folder still names the source's run
    half = {r.info.run_name: "auxcli.migrated_from" in r.data.tags for r in copies(target)}
    assert half == {"spec": True, "spec-s0": False}  # the parent copied, the seed half-made

    monkeypatch.setattr(MlflowClient, "log_artifacts", real)
    done = migrate(workdir, source, target)
    assert done.exit_code == 0, done.output
    assert "1 runs copied, 1 copied before, 1 half-made copies replaced" in done.output
    runs = {r.info.run_name: r for r in copies(target)}
    assert sorted(runs) == ["spec", "spec-s0"]  # no duplicate
    seed = runs["spec-s0"]
    assert seed.data.tags["mlflow.parentRunId"] == runs["spec"].info.run_id
    assert seed.data.tags["auxcli.migrated_from"] == ids["seed"] and "auxcli.migrating_from" not in seed.data.tags
    for name in ("complete.json", "metrics.json"):
        assert json.loads((workdir / "runs/spec/seed-0" / name).read_text())["mlflow_run_id"] == seed.info.run_id
    client = MlflowClient(tracking_uri=target)
    assert [(m.step, m.timestamp) for m in client.get_metric_history(seed.info.run_id, "lr")] == \
           [(1, 1001), (2, 1002), (3, 1003)]
    (output,) = client.get_run(seed.info.run_id).outputs.model_outputs
    assert client.get_logged_model(output.model_id).tags["auxcli.migrated_from"] != output.model_id
    live_models = client.search_logged_models([seed.info.experiment_id])
    assert [m.model_id for m in live_models] == [output.model_id]  # the half-made copy's model is gone

    again = migrate(workdir, source, target)
    assert "0 runs copied, 2 copied before" in again.output
    assert len(copies(target)) == 2


@pytest.mark.parametrize("option", ["--to"])
def test_migrate_needs_a_target(option, workdir):
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 2 and option in result.output
