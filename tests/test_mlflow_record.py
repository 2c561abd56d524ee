"""What a run leaves in MLflow beyond metrics: standard source/git/user tags and description, the data
set as a dataset input, the final weights as a logged model the registry accepts, one parent run per spec
with the seeds nested under it, transfer lineage, system metrics, and a model-training experiment.

One module-scoped store: a tiny spec with two seeds in a real git repository, then a linear probe of it
with system metrics on (about 15 s on 2 cores).
"""

from __future__ import annotations

import json
import statistics
import subprocess

import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.data.identity import data_identity
from auxcli.spec import DataSpec
from tests.conftest import project_folder

SPEC = """\
name: {name}
seeds: [0, 1]
data:
  dataset: synthetic
  root: data
  synthetic: {{train_per_class: 4, test_per_class: 2}}
model: {{backbone: resnet, depth: 8, base_width: 4}}
train: {{epochs: 2, batch_size: 64, eval_batch_size: 200}}
runtime: {{threads: 1}}
"""
REMOTE = "https://example.org/lab/study.git"


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def git(root, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A git repository holding two specs; `tiny` (seeds 0, 1) and `probe` (a linear probe of tiny) run."""
    root = tmp_path_factory.mktemp("record")
    with project_folder(root) as mp:
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # default 10 s: longer than these runs
        (root / "tiny.yaml").write_text(SPEC.format(name="tiny"))
        (root / "probe.yaml").write_text(
            SPEC.format(name="probe").replace("seeds: [0, 1]", "seeds: [0]")
            .replace("runtime: {threads: 1}", "runtime: {threads: 1, system_metrics: true}")
            + "transfer: {from: tiny, mode: linear}\n")
        (root / ".gitignore").write_text("data/\nruns/\nmlflow.db\nmlartifacts/\n")
        git(root, "init", "-q", "-b", "study")
        git(root, "remote", "add", "origin", REMOTE)
        git(root, "add", "-A")
        git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "specs")
        for spec in ("tiny.yaml", "probe.yaml"):
            result = invoke("run", spec)
            assert result.exit_code == 0, result.output
        yield root, MlflowClient(f"sqlite:///{root / 'mlflow.db'}"), result.output


def runs(client: MlflowClient, **tags: str):
    experiment = client.get_experiment_by_name("auxcli").experiment_id
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([experiment], filter_string=where)


def seed_run(client: MlflowClient, name: str):
    (run,) = [r for r in runs(client) if r.info.run_name == name]
    return client.get_run(run.info.run_id)  # search results leave out model inputs


def test_seed_runs_carry_mlflow_source_git_and_user_tags(store):
    root, client, _ = store
    run = seed_run(client, "tiny-s0")
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == git(root, "rev-parse", "HEAD")
    assert tags["mlflow.source.git.branch"] == "study"
    assert tags["mlflow.source.git.repoURL"] == REMOTE
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"].endswith("run tiny.yaml")
    assert tags["mlflow.user"]
    note = tags["mlflow.note.content"]
    assert "**tiny**, seed 0" in note and "run tiny.yaml" in note
    assert "```yaml\nname: tiny\n" in note and "  epochs: 2\n" in note  # the resolved spec
    # the existing per-seed contract is unchanged
    assert (tags["auxcli.spec_name"], tags["auxcli.seed"], tags["auxcli.git_branch"]) == ("tiny", "0", "study")


def test_seed_runs_have_the_data_set_as_dataset_input(store, monkeypatch):
    root, client, _ = store
    monkeypatch.chdir(root)
    expected = data_identity(DataSpec(dataset="synthetic", root="data",
                                      synthetic={"train_per_class": 4, "test_per_class": 2}))
    for name in ("tiny-s0", "tiny-s1", "probe-s0"):
        (entry,) = seed_run(client, name).inputs.dataset_inputs
        assert (entry.dataset.name, entry.dataset.digest) == (expected.name, expected.short_digest)
        assert {t.key: t.value for t in entry.tags}["mlflow.data.context"] == "train"
        assert json.loads(entry.dataset.source)["uri"] == str(expected.folder.resolve())
        profile = json.loads(entry.dataset.profile)
        assert profile["sha256"] == expected.digest and profile["files_md5"] == expected.files
    assert f"data: `{expected.name}` (digest `{expected.short_digest}`)" in \
        seed_run(client, "tiny-s0").data.tags["mlflow.note.content"]


def test_final_weights_are_a_logged_model_the_registry_accepts(store):
    import mlflow

    _, client, _ = store
    run = seed_run(client, "tiny-s1")
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert (model.name, model.source_run_id, model.status) == ("tiny", run.info.run_id, LoggedModelStatus.READY)
    for tag in ("mlflow.source.name", "mlflow.source.type", "mlflow.source.git.commit"):  # the UI's "Logged from"
        assert model.tags[tag] == run.data.tags[tag]
    assert {a.path for a in client.list_logged_model_artifacts(model.model_id)} >= {"final.pt",
                                                                                   "spec.resolved.yaml"}
    linked = {m.key: m.value for m in model.metrics}
    assert linked["final_test_acc"] == pytest.approx(run.data.metrics["final_test_acc"])
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        version = mlflow.register_model(f"models:/{model.model_id}", "tiny-resnet8")
    finally:
        mlflow.set_tracking_uri(None)
    assert int(version.version) == 1
    assert client.get_model_version("tiny-resnet8", str(version.version)).run_id == run.info.run_id


@pytest.mark.parametrize("name", ["tiny-s1", "probe-s0"])
def test_logged_model_is_a_pytorch_flavour_that_reproduces_the_test_accuracy(store, monkeypatch, name):
    """`mlflow.pytorch.load_model("models:/<id>")`, as an MLflow user loads a model: images in [0, 1] ->
    the main head's logits, scoring the test split as the run did; `mlflow.pyfunc` predicts with it too."""
    import mlflow.pyfunc
    import mlflow.pytorch
    import torch

    from auxcli.data.load import load_data

    root, client, _ = store
    monkeypatch.chdir(root)
    run = seed_run(client, name)
    (output,) = run.outputs.model_outputs
    assert "MLmodel" in {a.path for a in client.list_logged_model_artifacts(output.model_id)}
    test = load_data(DataSpec(dataset="synthetic", root="data",
                              synthetic={"train_per_class": 4, "test_per_class": 2})).test
    images = test.images.float() / 255
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        classifier = mlflow.pytorch.load_model(f"models:/{output.model_id}")
        predicted = mlflow.pyfunc.load_model(f"models:/{output.model_id}").predict(images[:5].numpy())
    finally:
        mlflow.set_tracking_uri(None)
    with torch.no_grad():
        logits = classifier(images)
    assert logits.shape == (len(test.fine), 100) and predicted.shape == (5, 100)
    assert predicted == pytest.approx(logits[:5].numpy(), abs=1e-4)
    correct = int((logits.argmax(1) == test.fine).sum())
    assert correct == pytest.approx(run.data.metrics["final_test_acc"] * len(test.fine), abs=1)


def test_a_logged_model_keeps_a_dotted_spec_name_as_its_tag(workdir):
    from auxcli.tracking import RunTracker

    tracker = RunTracker(f"sqlite:///{workdir / 'mlflow.db'}", "auxcli")
    run_id = tracker.start("smoke-lr0.05-s0", {"mlflow.source.name": "auxcli run smoke.yaml"}, {})
    (workdir / "final.pt").write_bytes(b"weights")
    model = tracker.client.get_logged_model(tracker.log_model("smoke-lr0.05", [workdir / "final.pt"], {}, 1))
    assert model.tags["auxcli.spec_name"] == "smoke-lr0.05"  # MLflow refuses '.' in the model name itself
    assert model.source_run_id == run_id and model.tags["mlflow.source.name"] == "auxcli run smoke.yaml"
    tracker.end("FINISHED")


def test_one_parent_per_spec_holds_the_mean_and_sample_std_of_its_seeds(store):
    _, client, _ = store
    (parent,) = runs(client, **{"auxcli.parent": "true", "auxcli.spec_name": "tiny"})
    assert parent.info.run_name == "tiny" and parent.info.status == "FINISHED"
    assert "auxcli.seed" not in parent.data.tags
    children = runs(client, **{"mlflow.parentRunId": parent.info.run_id})
    assert sorted(c.info.run_name for c in children) == ["tiny-s0", "tiny-s1"]
    for metric in ("final_test_acc", "final_train_loss", "best_test_acc"):
        values = [c.data.metrics[metric] for c in children]
        assert parent.data.metrics[metric] == pytest.approx(statistics.fmean(values))
        assert parent.data.metrics[f"{metric}_std"] == pytest.approx(statistics.stdev(values))
    assert parent.data.metrics["seeds_finished"] == 2
    assert "over seeds 0, 1" in parent.data.tags["mlflow.note.content"]
    assert parent.data.params["train.epochs"] == "2"
    (one,) = runs(client, **{"auxcli.parent": "true", "auxcli.spec_name": "probe"})  # one seed
    assert one.data.metrics["seeds_finished"] == 1 and "final_test_acc" in one.data.metrics
    assert not [k for k in one.data.metrics if k.endswith("_std")]  # undefined for n = 1, never 0


def test_a_seed_whose_parent_was_deleted_as_a_duplicate_ends_under_the_live_parent(workdir, monkeypatch):
    """Seeds started at once each create a parent and keep the oldest they see; on a server a seed can see
    its own as the oldest before an older one appears, whose creator then deletes it. Simulated: while
    seed 0 trains, an older parent appears and seed 0's is deleted. The seed still ends FINISHED, nested
    under the live parent, which holds its aggregate."""
    from auxcli.tracking import RunTracker

    (workdir / "tiny.yaml").write_text(SPEC.format(name="tiny").replace("seeds: [0, 1]", "seeds: [0]"))
    original_end = RunTracker.end
    survivors = []

    def end_after_losing_the_race(self, status):
        if self.run_id is None or survivors:  # once, for the seed's run
            return original_end(self, status)
        doomed = self.client.get_run(self.run_id).data.tags["mlflow.parentRunId"]
        tags = self.client.get_run(doomed).data.tags
        older = self.client.create_run(self.experiment_id, run_name="tiny", start_time=0, tags={
            k: tags[k] for k in ("auxcli.parent", "auxcli.spec_name", "auxcli.result_id")})
        survivors.append(older.info.run_id)
        self.client.delete_run(doomed)
        return original_end(self, status)

    monkeypatch.setattr(RunTracker, "end", end_after_losing_the_race)
    result = invoke("run", "tiny.yaml")
    assert result.exit_code == 0, result.output
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (seed,) = runs(client, **{"auxcli.seed": "0"})
    (parent,) = runs(client, **{"auxcli.parent": "true"})  # the deleted one is not found
    assert parent.info.run_id == survivors[0] == seed.data.tags["mlflow.parentRunId"]
    assert seed.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert parent.data.metrics["final_test_acc"] == seed.data.metrics["final_test_acc"]


def test_report_counts_only_the_seed_runs(store, monkeypatch):
    root, _, _ = store
    monkeypatch.chdir(root)
    result = invoke("report", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = {row["spec_name"]: row for row in json.loads(result.stdout)["generic"]}
    assert rows["tiny"]["n"] == 2 and rows["probe"]["n"] == 1


def test_transfer_links_its_source_run_and_takes_its_model_as_input(store):
    _, client, _ = store
    probe, source = seed_run(client, "probe-s0"), seed_run(client, "tiny-s0")
    assert probe.data.tags["auxcli.transfer.source_run_id"] == source.info.run_id  # the full id
    link = f"[tiny-s0](#/experiments/{source.info.experiment_id}/runs/{source.info.run_id})"
    assert link in probe.data.tags["mlflow.note.content"]
    (source_model,) = source.outputs.model_outputs
    assert [m.model_id for m in probe.inputs.model_inputs] == [source_model.model_id]


def test_system_metrics_are_logged_when_the_spec_asks(store):
    _, client, _ = store
    logged = set(seed_run(client, "probe-s0").data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= logged
    assert not any(key.startswith("system/") for key in seed_run(client, "tiny-s0").data.metrics)


def test_the_experiment_is_a_model_training_experiment_and_the_run_says_where_it_is(store):
    root, client, output = store
    experiment = client.get_experiment_by_name("auxcli")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    run_id = seed_run(client, "probe-s0").info.run_id
    (line,) = [ln for ln in output.splitlines() if ln.startswith("probe-s0: run folder ")]
    assert line.endswith("runs/probe/seed-0") and line.count("runs/probe/seed-0") == 1
    assert (f"open: auxcli ui   then http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/{run_id}"
            "?workflowType=machine_learning") in output


# ---------------------------------------------------------------------------------------------- pure parts

def test_seed_aggregates_are_mean_and_sample_std_of_summary_metrics_only():
    from auxcli.tracking import seed_aggregates

    got = seed_aggregates([{"final_test_acc": 0.5, "best_epoch": 3, "test_acc": 0.1},
                           {"final_test_acc": 0.7, "best_epoch": 5},
                           {"final_test_acc": float("nan")}])
    assert got["final_test_acc"] == pytest.approx(0.6) and got["final_test_acc_std"] == pytest.approx(0.1414213562)
    assert got["seeds_finished"] == 3 and "test_acc" not in got  # per-epoch metrics are not summaries
    assert got["best_epoch"] == 4 and got["best_epoch_std"] == pytest.approx(1.4142135624)
    assert seed_aggregates([{"best_test_acc": 0.4}]) == {"seeds_finished": 1, "best_test_acc": 0.4}  # no std of 1
    assert seed_aggregates([]) == {}


def test_ui_links_open_runs_as_model_training():
    from auxcli.tracking import ui_url

    assert ui_url("http://h:5000/", "3") == "http://h:5000/#/experiments/3?workflowType=machine_learning"
    assert ui_url("http://h:5000", "3", "abc") == "http://h:5000/#/experiments/3/runs/abc?workflowType=machine_learning"


def test_the_command_line_is_recorded_as_typed(monkeypatch):
    from auxcli.lineage import command_line

    monkeypatch.setenv("AUXCLI_COMMAND", "auxcli run 'my spec.yaml'")
    assert command_line() == "auxcli run 'my spec.yaml'"
    monkeypatch.delenv("AUXCLI_COMMAND")
    assert command_line(["/venv/bin/auxcli", "run", "a b.yaml"]) == "auxcli run 'a b.yaml'"
