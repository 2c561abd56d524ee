"""One result, one truth (issue 19): a seed's result is found by its identity, the resolved-spec fields that
change what it computes, by every command: run, plan, run --dry-run, report (store and run folders alike)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from auxcli.catalogue import folder_state
from auxcli.cli import app
from auxcli.identity import IDENTITY_TAG, NOT_IDENTITY, result_id, result_id_of_params, result_id_of_text
from auxcli.runfolder import RunFolder
from auxcli.specfile import dump_spec, load_spec
from auxcli.tracking import flatten


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------------------------------------- the rule

@pytest.mark.parametrize("override", ["seeds=[0, 1, 2]", "runtime.threads=3", "runtime.runs_dir=elsewhere",
                                      "runtime.system_metrics=true", "tracking.experiment=other",
                                      "tracking.uri=sqlite:///other.db", "name=renamed"])
def test_fields_outside_the_identity_leave_it_unchanged(tiny_spec, override):
    path = tiny_spec("s")
    assert result_id(load_spec(path, [override])) == result_id(load_spec(path))


@pytest.mark.parametrize("override", ["train.lr=0.05", "train.epochs=3", "data.subset=2", "model.base_width=8",
                                      "augment.flip=false", "runtime.precision=fp32", "runtime.bn_group=16",
                                      "runtime.deterministic=true", "train.eval_batch_size=100",
                                      "task.labels=superclass"])
def test_fields_that_change_what_a_seed_computes_change_the_identity(tiny_spec, override):
    path = tiny_spec("s")
    assert result_id(load_spec(path, [override])) != result_id(load_spec(path))


def test_not_identity_lists_only_fields_the_spec_has(tiny_spec):
    flat = flatten(load_spec(tiny_spec("s")).to_plain())
    for dotted in NOT_IDENTITY:
        assert any(key == dotted or key.startswith(dotted + ".") for key in flat), dotted


def test_a_resolved_spec_of_an_older_version_gets_todays_identity(tiny_spec):
    spec = load_spec(tiny_spec("s"))
    text = dump_spec(spec)
    assert result_id_of_text(text) == result_id(spec)
    # an older version did not write fields added since (defaults then as now): same identity
    older = "".join(line for line in text.splitlines(keepends=True) if "system_metrics" not in line
                    and "compile_mode" not in line)
    assert older != text and result_id_of_text(older) == result_id(spec)
    assert result_id_of_text(text.replace("lr: 0.1", "lr: 0.2")) != result_id(spec)
    assert result_id_of_text("name: [unclosed") is None and result_id_of_text(None) is None


@pytest.mark.parametrize("transfer", ["{from: pre, mode: finetune}", "{from: pre, mode: linear, bn: train}"])
def test_a_transfer_s_resolved_spec_gives_its_identity(tiny_spec, transfer):
    spec = load_spec(tiny_spec("t", f"transfer: {transfer}\n"))
    assert result_id_of_text(dump_spec(spec)) == result_id(spec)
    params = {k: str(v) for k, v in flatten(spec.to_plain()).items()}
    assert result_id_of_params(params) == result_id(spec)


def test_a_finetune_s_resolved_spec_loads_again_and_older_records_keep_their_identity(tiny_spec, workdir):
    """A finetune has no transfer.bn (a written one is refused), so its resolved spec leaves it out and loads
    as a spec again (reproduce, analyze); one written when resolved specs still held `bn: frozen` gives the
    same identity."""
    from auxcli.analysis.features import _spec_of

    spec = load_spec(tiny_spec("t", "transfer: {from: pre, mode: finetune}\n"))
    assert "bn" not in spec.to_plain()["transfer"]
    (workdir / "resolved.yaml").write_text(dump_spec(spec))
    assert load_spec(workdir / "resolved.yaml").to_plain() == spec.to_plain()
    assert _spec_of(None, {"spec": spec.to_plain()}).to_plain() == spec.to_plain()  # a checkpoint's spec
    older = dump_spec(spec).replace("  mode: finetune\n", "  mode: finetune\n  bn: frozen\n")
    assert "bn: frozen" in older and result_id_of_text(older) == result_id(spec)


def test_mlflow_params_of_older_runs_give_the_identity(tiny_spec):
    spec = load_spec(tiny_spec("s"), ["task.aux={kind: labelset, labels: superclass}"])
    params = {k: str(v) for k, v in flatten(spec.to_plain()).items()}
    params["runtime.resolved.device"] = "cpu"  # logged beside the spec, not part of it
    assert result_id_of_params(params) == result_id(spec)
    assert result_id_of_params({**params, "train.lr": "0.5"}) != result_id(spec)
    assert result_id_of_params({"not.a.spec": "1"}) is None


# ---------------------------------------------------------------------------------------------- run, plan, dry run

@pytest.fixture
def repo(workdir):
    """The test's folder as a git + DVC project, as a user's would be."""
    subprocess.run(["git", "init", "-q"], cwd=workdir, check=True)
    subprocess.run(["dvc", "init", "-q"], cwd=workdir, check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return workdir


def _seed_runs(workdir):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("auxcli")
    found = client.search_runs([experiment.experiment_id])
    return client, [r for r in found if "auxcli.seed" in r.data.tags]


@pytest.mark.slow
def test_more_seeds_train_only_the_new_ones_and_older_results_are_recognised(repo, tiny_spec):
    path = tiny_spec("s")
    first = invoke("run", path)
    assert first.exit_code == 0, first.output
    seed0 = json.loads((repo / "runs/s/seed-0/metrics.json").read_text())

    more = invoke("run", path, "--set", "seeds=[0, 1]")
    assert more.exit_code == 0, more.output
    assert "s-s0: complete" in more.output and "epoch 1/2" in more.output  # seed 1 alone trains
    assert json.loads((repo / "runs/s/seed-0/metrics.json").read_text()) == seed0  # untouched
    client, runs = _seed_runs(repo)
    assert sorted(r.data.tags["auxcli.seed"] for r in runs) == ["0", "1"]
    assert {r.data.tags[IDENTITY_TAG] for r in runs} == {result_id(load_spec(path))}
    parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
    assert parent.info.run_id == runs[1].data.tags["mlflow.parentRunId"]  # one parent for both seeds
    assert "final_test_acc_std" in parent.data.metrics  # the mean and std over both seeds

    one = invoke("run", path, "--set", "seeds=[0, 1]", "--seed", "0")
    assert one.exit_code == 0 and "s-s0: complete" in one.output and "epoch" not in one.output
    assert "0:done 1:done" in invoke("plan", path, "--set", "seeds=[0, 1]").output
    assert "0:done" in invoke("plan", path, "--set", "runtime.threads=2").output

    changed = invoke("run", path, "--set", "train.lr=0.05")
    assert changed.exit_code == 2 and "train.lr: 0.1 -> 0.05" in changed.output
    assert "seeds" not in changed.output.split("spec 's'")[1].split("Its result")[0]  # only identity fields
    dry = invoke("run", path, "--set", "train.lr=0.05", "--dry-run")
    assert dry.exit_code == 2 and "stale -> refuse" in dry.output  # what `run` would do, in the exit code too
    assert invoke("run", path, "--set", "seeds=[0, 1]", "--dry-run").exit_code == 0

    # A folder written by the previous version: whole-spec hash only (no result_id in the marker, the tag or
    # the spec's newer fields), for a spec that then had one seed.
    folder = RunFolder(repo / "runs/s/seed-1")
    marker = json.loads(folder.complete.read_text())
    folder.complete.write_text(json.dumps({k: v for k, v in marker.items() if k != "result_id"}))
    old_text = dump_spec(load_spec(path, ["seeds=[1]"]))
    folder.write_spec("".join(line for line in old_text.splitlines(keepends=True) if "system_metrics" not in line))
    client.delete_tag(marker["mlflow_run_id"], IDENTITY_TAG)
    assert folder_state(load_spec(path, ["seeds=[0, 1]"]), 1) == "done"
    again = invoke("run", path, "--set", "seeds=[0, 1]", "--set", "runtime.threads=2")
    assert again.exit_code == 0 and "epoch" not in again.output, again.output
    report = json.loads(invoke("report", path, "--set", "seeds=[0, 1]", "-f", "json").output)
    (row,) = report["generic"]
    assert row["n"] == 2 and "other_settings" not in report["footer"]


@pytest.mark.slow
def test_a_changed_thread_count_resumes_a_partial_run(repo, tiny_spec):
    from auxcli.train.runner import run_seed

    path = tiny_spec("s")
    stopped = run_seed(load_spec(path), 0, stop_after_epoch=1)
    assert stopped.status == "stopped" and RunFolder.of(load_spec(path), 0).last.exists()
    resumed = invoke("run", path, "--set", "runtime.threads=2")
    assert resumed.exit_code == 0, resumed.output
    assert "resuming after epoch 1" in resumed.output and "epoch 1/2" not in resumed.output
    _, runs = _seed_runs(repo)
    assert [r.info.run_id for r in runs] == [stopped.run_id]  # the same MLflow run, continued


# ---------------------------------------------------------------------------------------------- report

@pytest.mark.slow
def test_report_counts_only_the_reported_settings_from_the_store_and_the_folders_alike(workdir, tiny_spec):
    path = tiny_spec("s")
    assert invoke("run", path).exit_code == 0
    baseline = workdir / "runs/s"
    baseline.rename(workdir / "kept")
    other = invoke("run", path, "--set", "train.lr=0.5", "--set", "train.epochs=1", "--set", "train.milestones=[]")
    assert other.exit_code == 0, other.output
    shutil.rmtree(baseline)
    (workdir / "kept").rename(baseline)  # the workspace holds the baseline again, as after `dvc exp apply`
    expected = json.loads((baseline / "seed-0/metrics.json").read_text())["final_test_acc"]

    def cell(*args: str) -> tuple[float, int, dict]:
        result = invoke("report", *args, "-f", "json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        (row,) = report["generic"]
        return row["values"]["final_test_acc"], row["n"], report["footer"]

    for args in ((path,), ()):  # the named spec's identity; without specs, the workspace's run folders
        value, n, footer = cell(*args)
        assert (value, n) == (expected, 1) and footer["other_settings"] == 1
    text = " ".join(invoke("report", path).output.split())  # the footer is wrapped
    assert "1 runs of other settings not shown; `--all-settings` lists them" in text
    listed = " ".join(invoke("report", path, "--all-settings").output.split())
    assert "train.lr: 0.1 -> 0.5" in listed and "s-s0 (FINISHED" in listed
    # the same tables from the run folders alone (no store: a fresh clone after `dvc pull`)
    value, n, footer = cell(path, "--tracking-uri", f"sqlite:///{workdir / 'none.db'}")
    assert (value, n) == (expected, 1) and "run folders" in footer["source"]
    # the experiment's settings, asked for, are reported instead
    _, n, footer = cell(path, "--set", "train.lr=0.5", "--set", "train.epochs=1", "--set", "train.milestones=[]")
    assert n == 1 and footer["other_settings"] == 1  # its own run; the baseline is now the other setting


def test_plan_and_dry_run_agree_with_params_in_every_state(workdir, tiny_spec):
    path = tiny_spec("s")
    (workdir / "params.yaml").write_text("suite: mini\ntrain: {lr: 0.05}\n")
    (workdir / "dvc.yaml").write_text(f"stages:\n  s:\n    cmd: auxcli run {path.name} --params params.yaml\n")
    spec = load_spec(path, ["train.lr=0.05"])
    folder = RunFolder.of(spec, 0)
    for step in ("todo", "partial", "done", "stale"):
        if step == "partial":
            folder.root.mkdir(parents=True)
            folder.write_spec(dump_spec(spec))
            folder.last.write_bytes(b"x")
        elif step == "done":
            folder.write_metrics({"final_test_acc": 0.5})
            folder.write_completion({})
        elif step == "stale":
            folder.write_spec(dump_spec(load_spec(path, ["train.lr=0.2"])))
        plan = invoke("plan", path, "--params", "params.yaml")
        dry = invoke("run", path, "--params", "params.yaml", "--dry-run")
        assert f"0:{step}" in plan.output and f"s seed 0: {step}" in dry.output
        assert "note:" not in plan.output + dry.output  # --params given: nothing to say
    without = invoke("plan", path)
    assert "note: dvc.yaml runs these specs with --params params.yaml" in without.output
    assert "train.lr: 0.1 -> 0.05" in without.output and "0:stale" in without.output


def test_the_pipelines_params_file_is_read_from_its_stage_commands(workdir):
    from auxcli.pipeline import _params_arguments, pipeline_params_file

    stages = {"a": {"cmd": "auxcli run a.yaml --params=p1.yaml"},
              "b": {"cmd": ["auxcli data synth", "auxcli run 'b c.yaml' --params p2.yaml"]},
              "c": {"cmd": "echo '--params not-a-file.yaml'"},  # quoted: one word, not the flag
              "d": {"cmd": "auxcli run d.yaml --params"}, "e": "not a stage", "f": {"cmd": "unclosed 'quote"}}
    assert _params_arguments(stages) == ["p1.yaml", "p2.yaml"]
    assert pipeline_params_file() is None  # no dvc.yaml
    (workdir / "dvc.yaml").write_text("stages:\n  s:\n    cmd: auxcli run s.yaml --params p2.yaml\n")
    assert pipeline_params_file() is None  # named, but not there
    (workdir / "p2.yaml").write_text("train: {lr: 0.1}\n")
    assert pipeline_params_file() == workdir / "p2.yaml"
    (workdir / "dvc.yaml").write_text("stages: [\n")  # DVC reports a broken dvc.yaml; this is only a hint
    assert pipeline_params_file() is None
