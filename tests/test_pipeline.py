"""The DVC side without DVC: the generated pipeline, git-tracked results, data preparation and identity, and
where relative paths and the default MLflow store are anchored (tests/test_dvc.py runs the real thing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.errors import DataError
from auxcli.pipeline import pipeline_plots, pipeline_stages
from auxcli.runfolder import RunFolder
from auxcli.specfile import load_spec, params_overrides

runner = CliRunner()


def _specs(tiny_spec, *named: tuple[str, str]) -> list:
    return [(Path(path), load_spec(path)) for path in (tiny_spec(name, extra) for name, extra in named)]


def test_pipeline_set_goes_onto_every_stage_command_as_one_argument(workdir, tiny_spec):
    import shlex

    tiny_spec("pretrain")
    tiny_spec("probe", "transfer: {from: pretrain, mode: linear}\n")
    result = runner.invoke(app, ["pipeline", "pretrain.yaml", "probe.yaml", "--set", "train.lr=0.05",
                                 "--set", "runtime.runs_dir=my runs"])
    assert result.exit_code == 0, result.output
    from auxcli.safeyaml import read_yaml_file

    stages = read_yaml_file(Path("dvc.yaml"), "dvc.yaml", "a DVC pipeline")["stages"]
    for name in ("data", "pretrain", "probe", "summary"):
        for command in stages[name]["cmd"].split(" && "):
            args = shlex.split(command)
            assert args[args.index("--params") + 1:args.index("--params") + 6] == [
                "params.yaml", "--set", "train.lr=0.05", "--set", "runtime.runs_dir=my runs"], (name, command)
    assert stages["probe"]["outs"][0] == "my runs/probe"  # the outputs follow the resolved specs


def test_data_stage_comes_first_and_transfers_depend_on_their_sources_run_folder(workdir, tiny_spec):
    specs = _specs(tiny_spec, ("probe", "transfer: {from: pretrain, mode: linear}\n"), ("pretrain", ""))
    (workdir / "params.yaml").write_text("suite: tiny\ndata: {subset: 2}\ntrain: {lr: 0.05}\n")
    stages = pipeline_stages(specs)
    assert list(stages) == ["data", "pretrain", "probe", "summary"]
    assert stages["data"]["outs"] == [{"data": {"persist": True}}]
    assert stages["data"]["params"] == [{"params.yaml": ["suite", "data"]}]  # a training knob never re-prepares
    assert stages["probe"]["deps"][-2:] == ["data", "runs/pretrain"]
    assert stages["probe"]["params"] == [{"params.yaml": None}]  # every key, including ones `-S +key=` adds
    assert stages["probe"]["outs"] == ["runs/probe", {"results/history/probe": {"cache": False}},
                                       {"results/metrics/probe": {"cache": False}}]
    assert "metrics" not in stages["probe"]  # per-run files would make `dvc exp show` one column per key per run
    assert stages["summary"]["deps"][-2:] == ["results/metrics/pretrain", "results/metrics/probe"]
    assert stages["summary"]["metrics"] == [{"results/summary.json": {"cache": False}}]  # the only DVC metrics
    assert stages["summary"]["cmd"].endswith("--summary")
    assert "--force" not in stages["probe"]["cmd"]  # DVC removes the run folder before it re-runs a stage


def test_plots_overlay_a_tables_runs_per_metric_on_whole_epochs_and_draw_figures_2_and_3(workdir, tiny_spec):
    specs = _specs(tiny_spec, ("mini-table1-gt", ""), ("mini-table1-random", "task: {labels: random}\n"),
                   ("mini-table3-finetune-gt", "transfer: {from: mini-table1-gt, mode: finetune}\n"),
                   ("mini-table4-crop", "task: {labels: none, aux: {kind: crop}}\n"), ("other", ""))
    specs[0] = (specs[0][0], specs[0][1].model_copy(update={"seeds": [0, 1]}))
    plots = {key: value for entry in pipeline_plots([s for _, s in specs]) for key, value in entry.items()}
    assert plots["mini-table1 test_acc"]["y"] == {  # one chart per metric and table, every run of the table
        "results/history/mini-table1-gt/seed-0.csv": "test_acc",
        "results/history/mini-table1-gt/seed-1.csv": "test_acc",
        "results/history/mini-table1-random/seed-0.csv": "test_acc"}
    assert set(plots["mini-table3 train_loss"]["y"]) == {  # Table 3's scratch row is table1-gt
        "results/history/mini-table3-finetune-gt/seed-0.csv", "results/history/mini-table1-gt/seed-0.csv",
        "results/history/mini-table1-gt/seed-1.csv"}
    assert {k for k in plots if k.startswith("mini-table4 ")} == {
        "mini-table4 train_aux_acc", "mini-table4 test_aux_acc", "mini-table4 train_loss", "mini-table4 test_aux_loss"}
    assert "other test_acc" in plots  # a spec outside the study gets its own charts
    assert not any(" seed " in p["title"] or "-s0 " in k for k, p in plots.items())  # no chart per run
    assert plots["figure2"]["y"] == {"results/history/mini-table3-finetune-gt/seed-0.csv": "train_loss",
                                     "results/history/mini-table1-gt/seed-0.csv": "train_loss",
                                     "results/history/mini-table1-gt/seed-1.csv": "train_loss"}
    assert plots["figure3"]["y"]["results/history/mini-table1-gt/seed-0.csv"] == "train_acc"
    assert not any("images_per_second" in json.dumps(p) for p in plots.values())
    assert {p["template"] for p in plots.values()} == {"auxcli-epochs"}


def test_the_plot_template_asks_for_whole_epoch_ticks_and_pipeline_writes_it(workdir, tiny_spec):
    from auxcli.plottemplate import EPOCH_TEMPLATE_CONTENT

    x = EPOCH_TEMPLATE_CONTENT["encoding"]["x"]
    assert x["field"] == "<DVC_METRIC_X>" and x["axis"] == {"tickMinStep": 1, "format": "d"}
    tiny_spec("t")
    (workdir / ".dvc").mkdir()
    assert runner.invoke(app, ["pipeline", "t.yaml"]).exit_code == 0
    assert json.loads((workdir / ".dvc/plots/auxcli-epochs.json").read_text()) == EPOCH_TEMPLATE_CONTENT


def test_history_writes_epoch_as_an_integer(workdir, tiny_spec):
    folder = RunFolder.of(load_spec(tiny_spec("t")), 0)
    folder.prepare()
    folder.write_history([{"epoch": 1.0, "test_acc": 0.5}, {"epoch": 2.0, "test_acc": 0.25}])  # as read back
    assert folder.history.read_text().splitlines() == ["epoch,test_acc", "1,0.5", "2,0.25"]


def test_pipeline_runs_the_suite_params_yaml_names_and_refuses_a_mismatch(workdir, tiny_spec):
    (workdir / "specs/tiny").mkdir(parents=True)
    Path(tiny_spec("tiny-table1-gt")).rename(workdir / "specs/tiny/tiny-table1-gt.yaml")
    (workdir / ".dvc").mkdir()
    (workdir / "params.yaml").write_text("suite: tiny\nseeds: [0, 1]\n")
    result = runner.invoke(app, ["pipeline"])
    assert result.exit_code == 0, result.output
    text = (workdir / "dvc.yaml").read_text()
    assert "auxcli data prepare specs/tiny --params params.yaml --suite tiny" in text
    assert "results/history/tiny-table1-gt/seed-1.csv" in text  # params.yaml's seeds, not the spec's
    assert "last.pt" in (workdir / ".dvcignore").read_text().splitlines()

    (workdir / "params.yaml").write_text("suite: paper\n")
    result = runner.invoke(app, ["data", "prepare", "specs/tiny", "--params", "params.yaml", "--suite", "tiny"])
    assert result.exit_code == 2 and "auxcli pipeline" in result.output and "'paper'" in result.output
    result = runner.invoke(app, ["pipeline"])
    assert result.exit_code == 2 and "params.yaml" in result.output and "suite" in result.output


def test_suite_is_a_pipeline_key_not_a_spec_override(workdir):
    (workdir / "params.yaml").write_text("suite: mini\nseeds: [0, 1]\ntrain: {epochs: 5}\n")
    assert params_overrides(workdir / "params.yaml") == ["seeds=[0, 1]", "train.epochs=5"]


def _finish(spec, seed: int, metrics: dict) -> RunFolder:
    folder = RunFolder.of(spec, seed)
    folder.write_history([{"epoch": 1, "train_acc": 0.1, "test_acc": 0.2}])
    folder.write_metrics(metrics)
    folder.write_completion({"spec_name": spec.name, "seed": seed})  # finished and recorded
    return folder


def test_results_hold_numeric_final_metrics_per_seed_and_follow_the_seeds(workdir, tiny_spec):
    from auxcli.results import write_results

    spec = load_spec(tiny_spec("t"), ["seeds=[0, 1]"])
    _finish(spec, 0, {"final_test_acc": 0.25, "final_train_acc": 0.5, "best_test_acc": 0.3, "best_epoch": 2,
                      "final_test_loss": 3.5, "final_test_aux_acc": float("nan"), "mlflow_run_id": "abc",
                      "spec_name": "t", "seed": 0})
    written = write_results(spec, Path("results"))  # seed 1 has not finished: no files for it
    assert sorted(p.as_posix() for p in written) == ["results/history/t/seed-0.csv", "results/metrics/t/seed-0.json"]
    assert json.loads(Path("results/metrics/t/seed-0.json").read_text()) == {  # every summary metric, numbers only
        "final_test_acc": 0.25, "final_train_acc": 0.5, "best_epoch": 2, "best_test_acc": 0.3, "final_test_loss": 3.5}
    assert Path("results/history/t/seed-0.csv").read_text() == RunFolder.of(spec, 0).history.read_text()

    result = runner.invoke(app, ["results", str(tiny_spec("t")), "--set", "seeds=[1]"])
    assert result.exit_code == 0, result.output
    assert not list(Path("results").rglob("seed-0.*"))  # a seed the spec no longer runs leaves no result


def test_summary_holds_mean_sample_std_and_n_per_spec_and_no_std_for_one_seed(workdir, tiny_spec):
    import statistics

    two = load_spec(tiny_spec("two"), ["seeds=[0, 1, 2]"])  # seed 2 has not finished
    one = load_spec(tiny_spec("x-table4-crop", "task: {labels: none, aux: {kind: crop}}\n"))
    none = load_spec(tiny_spec("none"))
    for seed, acc in ((0, 0.25), (1, 0.5)):
        _finish(two, seed, {"final_test_acc": acc, "final_train_acc": 0.9, "best_epoch": 1})
    _finish(one, 0, {"final_test_aux_acc": 0.75, "final_train_aux_acc": 0.8})  # Table 4's cell: aux train acc
    from auxcli.results import write_results

    for spec in (two, one, none):
        write_results(spec, Path("results"))
    Path("results/metrics/two/seed-7.json").write_text('{"final_test_acc": 0.0}')  # a seed the spec lacks
    result = runner.invoke(app, ["results", "two.yaml", "x-table4-crop.yaml", "none.yaml", "--summary",
                                 "--set", "seeds=[0, 1, 2]"])
    assert result.exit_code == 0, result.output
    summary = json.loads(Path("results/summary.json").read_text())
    assert summary == {"two": {"mean": 0.375, "std": statistics.stdev([0.25, 0.5]), "n": 2},
                       "x-table4-crop": {"mean": 0.8, "n": 1}}  # n = 1: no std (undefined, not 0)
    assert sorted(p.name for p in Path("results/metrics/two").iterdir()) == ["seed-0.json", "seed-1.json",
                                                                            "seed-7.json"]  # --summary writes only it


def test_relative_paths_and_the_default_store_are_anchored_at_the_repository(workdir, monkeypatch, tiny_spec):
    from auxcli.project import anchored, store_root, workspace_root
    from auxcli.tracking import default_artifact_location, resolve_tracking_uri

    monkeypatch.delenv("DVC_ROOT", raising=False)
    spec = load_spec(tiny_spec("t"))
    assert RunFolder.of(spec, 0).root == Path("runs/t/seed-0")  # outside a repository: the cwd, as before
    (workdir / ".git").mkdir()
    sub = workdir / "specs" / "deep"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert workspace_root() == workdir and anchored("runs") == workdir / "runs"
    assert RunFolder.of(spec, 0).root == workdir / "runs/t/seed-0"
    assert resolve_tracking_uri(None) == f"sqlite:///{workdir / 'mlflow.db'}"
    assert default_artifact_location("auxcli") == (workdir / "mlartifacts" / "auxcli").as_uri()

    temp = workdir / ".dvc/tmp/exps/tmpabc"  # dvc exp run --temp's copy of the repository
    (temp / ".dvc").mkdir(parents=True)
    monkeypatch.chdir(temp)
    assert workspace_root() == temp and store_root() == workdir  # runs in the copy, the store in the repository
    monkeypatch.setenv("DVC_ROOT", str(workdir / "elsewhere"))
    assert store_root() == workdir / "elsewhere"  # what DVC says the user's repository is wins


def test_prepare_generates_once_and_identity_follows_the_bytes_the_subset_and_dvc_lock(workdir, tiny_spec):
    from auxcli.data.identity import data_identity
    from auxcli.data.prepare import prepare_data

    spec = load_spec(tiny_spec("t")).data
    (first,) = prepare_data([spec, spec.model_copy(update={"subset": 2})])  # one archive for both
    assert first.action == "generated" and first.identity.folder.is_dir()
    (again,) = prepare_data([spec])
    assert again.action == "present" and again.identity == first.identity

    other_seed = spec.model_copy(update={"synthetic": spec.synthetic.model_copy(update={"seed": 1})})
    prepare_data([other_seed])
    digests = {data_identity(s).digest for s in (spec, other_seed, spec.model_copy(update={"subset": 2}))}
    assert len(digests) == 3
    assert first.identity.dvc_md5 is None

    (workdir / ".git").mkdir()
    (workdir / "dvc.lock").write_text("schema: '2.0'\nstages:\n  data:\n    cmd: auxcli data prepare specs\n"
                                      "    outs:\n    - path: data\n      hash: md5\n      md5: 0f1e.dir\n")
    identity = data_identity(spec)
    assert (identity.dvc_path, identity.dvc_md5) == ("data", "0f1e.dir")
    (workdir / "dvc.lock").unlink()
    (workdir / "data.dvc").write_text("outs:\n- md5: 77aa.dir\n  path: data\n")  # what `dvc add data` writes
    assert data_identity(spec).dvc_md5 == "77aa.dir"


def test_prepare_without_download_names_the_missing_cifar_files(workdir, tiny_spec):
    from auxcli.data.prepare import prepare_data

    spec = load_spec(tiny_spec("t"), ["data.dataset=cifar100", "data.download=false"]).data
    with pytest.raises(DataError, match="data.download is false"):
        prepare_data([spec])


def test_run_folder_reader_reports_finished_runs_and_skips_damaged_ones(workdir, tiny_spec):
    from auxcli.report.collect import RunFolders, store_is_missing
    from auxcli.specfile import dump_spec

    spec = load_spec(tiny_spec("x-table1-gt"), ["seeds=[0, 1, 2]"])
    for seed in (0, 1):
        folder = _finish(spec, seed, {"final_test_acc": 0.2 + seed / 10, "mlflow_run_id": f"id{seed}",
                                      "spec_name": spec.name, "seed": seed})
        folder.write_spec(dump_spec(spec))
    RunFolder.of(spec, 1).spec.write_text("name: [unclosed")  # a half-copied folder
    RunFolder.of(spec, 2).prepare()  # not finished: no metrics.json
    folders = RunFolders([Path("runs")])
    (record,) = folders.runs()
    assert (record.run_id, record.spec_name, record.seed, record.status) == ("id0", "x-table1-gt", 0, "FINISHED")
    assert record.metrics == {"final_test_acc": 0.2} and record.params["train.lr"] == "0.1"
    assert folders.histories(["id0"], "test_acc") == {"id0": [(1, 0.2)]}
    assert store_is_missing(f"sqlite:///{workdir / 'mlflow.db'}") and not store_is_missing("http://127.0.0.1:5000")


def test_run_folders_outside_the_repository_are_no_outputs_yet_order_transfers(workdir, tiny_spec, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("shared-runs").as_posix()
    specs = [(Path(p), load_spec(p, [f"runtime.runs_dir={elsewhere}"]))
             for p in (tiny_spec("pretrain"), tiny_spec("probe", "transfer: {from: pretrain, mode: linear}\n"))]
    stages = pipeline_stages(specs)
    assert stages["probe"]["outs"] == [{"results/history/probe": {"cache": False}},  # git still carries results
                                       {"results/metrics/probe": {"cache": False}}]
    assert stages["probe"]["deps"][-1] == "results/history/pretrain"  # DVC still runs the source first
