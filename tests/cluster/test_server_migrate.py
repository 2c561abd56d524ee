"""Moving a project from the embedded store to the lab's tracking server (`auxcli migrate`), and every
command against that server (MLflow server on PostgreSQL with proxied artifacts, tests/cluster/conftest.py).

One project is trained once per module on the embedded store: a pretrain, a finetune from it, and a run
killed after its first epoch (a partial run: `last.pt`, an MLflow run left RUNNING). Then it is migrated.
"""

from __future__ import annotations

import filecmp
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_cluster import REPO, TINY, auxcli
from typer.testing import CliRunner

from auxcli.cli import app

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]  # one worker starts the engines
EXPERIMENT = "migrated"  # its own experiment: the session's other tests log theirs to the same server
NAMES = ("mig-pre", "mig-fine", "mig-part")
ID_TAGS = ("mlflow.parentRunId", "auxcli.transfer.source_run_id", "mlflow.note.content")  # name run ids


def spec_text(name: str, epochs: int = 2, transfer: str | None = None) -> str:
    text = TINY.format(name=name, seeds="[0]", per_class=2, epochs=epochs)
    text += f"tracking: {{experiment: {EXPERIMENT}}}\n"
    return text + (f"transfer: {{from: {transfer}, mode: finetune}}\n" if transfer else "")


@pytest.fixture(scope="module")
def project(tmp_path_factory, mlflow_server):
    from mlflow.tracking import MlflowClient

    started = time.monotonic()
    folder = tmp_path_factory.mktemp("project")
    (folder / "mig-pre.yaml").write_text(spec_text("mig-pre"))
    (folder / "mig-fine.yaml").write_text(spec_text("mig-fine", transfer="mig-pre"))
    (folder / "mig-part.yaml").write_text(spec_text("mig-part", epochs=3))
    # the partial run: paused after its first epoch's checkpoint, then killed (a lost node: its MLflow run
    # stays RUNNING; SIGTERM would wait for the pause, which sits where signals are deferred)
    env = {**os.environ, "PYTHONPATH": str(REPO), "AUXCLI_TEST_PAUSE_AT": "after-checkpoint",
           "AUXCLI_TEST_PAUSE_SECONDS": "600"}  # until stopped below
    env.pop("MLFLOW_TRACKING_URI", None)
    partial = subprocess.Popen([sys.executable, "-m", "auxcli", "run", "mig-part.yaml"], cwd=folder, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    auxcli("run", "mig-pre.yaml", "mig-fine.yaml", cwd=folder)
    for line in partial.stdout:
        if "auxcli-test-paused-at" in line:
            break
    partial.kill()
    partial.communicate(timeout=120)
    assert (folder / "runs/mig-part/seed-0/last.pt").exists()
    assert not (folder / "runs/mig-part/seed-0/complete.json").exists()

    print(f"training took {time.monotonic() - started:.1f} s")
    source_uri = f"sqlite:///{folder / 'mlflow.db'}"
    source = MlflowClient(tracking_uri=source_uri)
    (experiment,) = [e for e in source.search_experiments() if e.name == EXPERIMENT]
    source_ids = {r.info.run_id for r in source.search_runs([experiment.experiment_id])}
    old_folder_ids = {name: folder_run_id(folder, name) for name in NAMES}
    started = time.monotonic()
    migrated = auxcli("migrate", "--to", mlflow_server.url, cwd=folder)
    print(f"migrate took {time.monotonic() - started:.1f} s")
    target = MlflowClient(tracking_uri=mlflow_server.url)
    run_ids = {r.data.tags["auxcli.migrated_from"]: r.info.run_id
               for r in target.search_runs([target.get_experiment_by_name(EXPERIMENT).experiment_id])}
    return SimpleNamespace(folder=folder, source=source, target=target, source_uri=source_uri,
                           url=mlflow_server.url, source_ids=source_ids, run_ids=run_ids,
                           old_folder_ids=old_folder_ids, output=migrated.stdout)


def folder_run_id(folder: Path, name: str) -> str:
    import json

    records = [folder / "runs" / name / "seed-0" / f for f in ("complete.json", "metrics.json")]
    found = [json.loads(p.read_text())["mlflow_run_id"] for p in records if p.exists()]
    return found[0] if found else ""


def test_every_run_is_copied_with_everything_it_holds(project, tmp_path):
    source, target, run_ids = project.source, project.target, project.run_ids
    assert set(run_ids) == project.source_ids and len(project.source_ids) == 6  # 3 parents, 3 seeds
    assert f"{len(run_ids)} runs copied, 0 copied before" in project.output, project.output

    def remap(text: str) -> str:
        return re.sub(r"\b[0-9a-f]{32}\b", lambda m: run_ids.get(m.group(0), m.group(0)), text)

    source_exp = source.get_experiment_by_name(EXPERIMENT).experiment_id
    target_exp = target.get_experiment_by_name(EXPERIMENT).experiment_id
    for old, new in run_ids.items():
        a, b = source.get_run(old), target.get_run(new)
        label = a.info.run_name
        for attribute in ("run_name", "status", "start_time", "end_time", "user_id", "lifecycle_stage"):
            assert getattr(a.info, attribute) == getattr(b.info, attribute), (label, attribute)
        assert a.data.params == b.data.params, label
        copied_tags = {k: v for k, v in b.data.tags.items() if not k.startswith("auxcli.migrated_from")}
        assert {k: v for k, v in a.data.tags.items() if k not in ID_TAGS} == \
               {k: v for k, v in copied_tags.items() if k not in ID_TAGS}, label
        for key in ID_TAGS:  # run ids (and experiment links) point at the copies
            if key in a.data.tags:
                assert copied_tags[key] == remap(a.data.tags[key]).replace(
                    f"#/experiments/{source_exp}/", f"#/experiments/{target_exp}/"), (label, key)
        assert b.data.tags["auxcli.migrated_from"] == old
        assert b.data.tags["auxcli.migrated_from_store"] == project.source_uri
        assert set(a.data.metrics) == set(b.data.metrics), label
        for key in a.data.metrics:  # whole histories: values, steps and timestamps
            history = [sorted((m.step, m.timestamp, m.value) for m in c.get_metric_history(r, key))
                       for c, r in ((source, old), (target, new))]
            assert history[0] == history[1], (label, key)
        same_files(source.download_artifacts(old, "", str(tmp_path / old)),  # none for a parent run
                   target.download_artifacts(new, "", str(tmp_path / new)))
        if a.info.status == "FINISHED" and "auxcli.seed" in a.data.tags:
            assert source.list_artifacts(old), label
        datasets = [[(d.dataset.name, d.dataset.digest, d.dataset.source, d.dataset.profile,
                      sorted((t.key, t.value) for t in d.tags)) for d in run.inputs.dataset_inputs]
                    for run in (a, b)]
        assert datasets[0] == datasets[1], label
        outputs = [[o.step for o in run.outputs.model_outputs] for run in (a, b)]
        assert outputs[0] == outputs[1], label
        for old_out, new_out in zip(a.outputs.model_outputs, b.outputs.model_outputs):
            same_model(source.get_logged_model(old_out.model_id), target.get_logged_model(new_out.model_id),
                       run_ids, tmp_path, project.url)
        for old_in, new_in in zip(a.inputs.model_inputs, b.inputs.model_inputs):  # the finetune's source model
            assert target.get_logged_model(new_in.model_id).tags["auxcli.migrated_from"] == old_in.model_id
        assert len(a.inputs.model_inputs) == len(b.inputs.model_inputs)
    fine = [old for old in run_ids if source.get_run(old).info.run_name == "mig-fine-s0"]
    assert source.get_run(fine[0]).inputs.model_inputs  # the comparison above saw a model input

    # the run folders name the copies
    for name in NAMES:
        old = project.old_folder_ids[name]
        if old:
            assert folder_run_id(project.folder, name) == run_ids[old], name


def same_model(a, b, run_ids: dict[str, str], tmp_path: Path, url: str) -> None:
    from mlflow.artifacts import download_artifacts

    assert (a.name, a.model_type, a.params, str(a.status)) == (b.name, b.model_type, b.params, str(b.status))
    assert a.tags == {k: v for k, v in b.tags.items() if k != "auxcli.migrated_from"}
    assert b.tags["auxcli.migrated_from"] == a.model_id and b.source_run_id == run_ids[a.source_run_id]
    assert sorted((m.key, m.value, m.step, m.timestamp) for m in a.metrics) == \
           sorted((m.key, m.value, m.step, m.timestamp) for m in b.metrics)
    assert a.status.to_proto() and str(a.status).endswith("READY")
    same_files(download_artifacts(artifact_uri=a.artifact_location, dst_path=str(tmp_path / a.model_id)),
               download_artifacts(artifact_uri=b.artifact_location, dst_path=str(tmp_path / b.model_id),
                                  tracking_uri=url))


def same_files(left: str, right: str) -> None:
    files = [sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file())
             for root in (left, right)]
    assert files[0] == files[1]
    for name in files[0]:
        assert filecmp.cmp(Path(left, name), Path(right, name), shallow=False), name


def table(text: str) -> list[str]:
    """A report without the store's name and the source runs' short ids, which differ by store."""
    lines = [line for line in text.splitlines() if not line.startswith("Store:")]
    return [re.sub(r"\([0-9a-f]{8}\)", "(run)", line) for line in lines]


def test_the_server_reports_and_resumes_as_the_embedded_store_did(project):
    folder, specs = project.folder, ["mig-pre.yaml", "mig-fine.yaml"]
    embedded = auxcli("report", *specs, cwd=folder).stdout
    served = auxcli("report", *specs, cwd=folder, tracking=project.url).stdout
    assert table(served) == table(embedded)

    experiment = project.target.get_experiment_by_name(EXPERIMENT).experiment_id
    before = len(project.target.search_runs([experiment]))
    again = auxcli("run", *specs, cwd=folder, tracking=project.url)  # done: trains nothing
    assert "mig-pre-s0: complete" in again.stdout and "mig-fine-s0: complete" in again.stdout, again.stdout
    assert "epoch" not in again.stdout

    # the partial run's last.pt names its old id: it resumes into the copy, logging each epoch once
    (old_partial,) = [old for old in project.run_ids if project.source.get_run(old).info.run_name == "mig-part-s0"]
    auxcli("run", "mig-part.yaml", cwd=folder, tracking=project.url)
    copy = project.target.get_run(project.run_ids[old_partial])
    assert copy.info.status == "FINISHED"
    assert folder_run_id(folder, "mig-part") == copy.info.run_id
    assert sorted(m.step for m in project.target.get_metric_history(copy.info.run_id, "lr")) == [1, 2, 3]
    assert len(project.target.search_runs([experiment])) == before  # no new run

    # migrating again adds nothing
    second = auxcli("migrate", "--to", project.url, cwd=folder)
    assert f"0 runs copied, {len(project.run_ids)} copied before" in second.stdout, second.stdout
    assert len(project.target.search_runs([experiment])) == before


def test_a_bundle_of_a_server_run_reproduces_from_the_server_alone(project, tmp_path):
    (pre,) = [new for old, new in project.run_ids.items()
              if project.source.get_run(old).info.run_name == "mig-pre-s0"]
    auxcli("bundle", f"runs:/{pre}", "-o", "pre.tar.gz", cwd=tmp_path, tracking=project.url)  # no run folder here
    result = auxcli("reproduce", "pre.tar.gz", cwd=tmp_path, tracking=project.url)
    assert "NO" not in result.stdout.split(), result.stdout
    # the re-run is recorded on the server too, in `<experiment>-reproduce`, its artifacts proxied
    (rerun,) = [r for r in project.target.search_runs(
        [project.target.get_experiment_by_name(f"{EXPERIMENT}-reproduce").experiment_id],
        filter_string="tags.`auxcli.spec_name` = 'mig-pre'") if "auxcli.seed" in r.data.tags]
    assert rerun.info.status == "FINISHED" and rerun.info.artifact_uri.startswith("mlflow-artifacts:")
    assert project.target.list_artifacts(rerun.info.run_id)


def test_analyze_logs_to_the_server_and_ui_links_to_it(project, tmp_path, monkeypatch):
    # (a finetune's final.pt is refused by analyze itself: its embedded spec writes transfer.bn; not a store matter)
    auxcli("run", "mig-part.yaml", cwd=project.folder, tracking=project.url)  # finished (done if resumed above)
    ids = [new for old, new in project.run_ids.items()
           if project.source.get_run(old).info.run_name in ("mig-pre-s0", "mig-part-s0")]
    analyzed = auxcli("analyze", *ids, "--out", str(tmp_path / "analysis"), cwd=project.folder, tracking=project.url)
    (run_id,) = re.findall(r"MLflow run ([0-9a-f]{32})", analyzed.stderr)
    logged = {f.path for f in project.target.list_artifacts(run_id, "analysis")}
    assert "analysis/probe.json" in logged, logged  # uploaded through the server's artifact proxy
    assert project.target.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")

    monkeypatch.setenv("MLFLOW_TRACKING_URI", project.url)
    ui = CliRunner().invoke(app, ["ui", "--experiment", EXPERIMENT])
    experiment = project.target.get_experiment_by_name(EXPERIMENT).experiment_id
    assert ui.exit_code == 0, ui.output
    assert "nothing to start" in ui.output
    assert f"{project.url}/#/experiments/{experiment}?workflowType=machine_learning" in ui.output
