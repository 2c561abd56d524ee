"""CLI conventions: --version, -h, completion, -q; `auxcli show`; `auxcli run --dry-run`; `--set a,b` sweeps."""

from __future__ import annotations

import json
import re

import pytest
from mlflow.tracking import MlflowClient
from ruamel.yaml import YAML
from typer.testing import CliRunner

from auxcli import __version__
from auxcli.cli import app
from auxcli.errors import SpecError
from auxcli.runfolder import RunFolder
from auxcli.specfile import dump_spec, load_spec
from auxcli.sweep import load_grid, parse_grid, split_values


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def yaml_documents(text: str) -> list[dict]:
    return list(YAML(typ="safe", pure=True).load_all(text))


# ---------------------------------------------------------------------------------------------- conventions

def test_version_prints_the_package_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"auxcli {__version__}\n"


@pytest.mark.parametrize("args", [["-h"], ["run", "-h"], ["data", "-h"]])
def test_dash_h_is_help(args):
    result = invoke(*args)
    assert result.exit_code == 0 and "Usage:" in result.stdout
    if args == ["-h"]:
        assert "--install-completion" in result.stdout and "--quiet" in result.stdout
    if args == ["run", "-h"]:
        assert "--dry-run" in result.stdout


def test_verbosity_flags_set_the_level_for_child_processes(workdir, monkeypatch):
    import os

    from auxcli.console import ENV

    monkeypatch.delenv(ENV, raising=False)
    (workdir / "s.yaml").write_text("name: s\n")
    assert invoke("-q", "validate", "s.yaml").exit_code == 0 and os.environ[ENV] == "-1"
    assert invoke("-vv", "validate", "s.yaml").exit_code == 0 and os.environ[ENV] == "2"
    assert invoke("validate", "s.yaml").exit_code == 0 and os.environ[ENV] == "0"


# ---------------------------------------------------------------------------------------------- show

def test_show_prints_the_resolved_spec_with_params_then_set(workdir):
    (workdir / "_base.yaml").write_text("model: {depth: 20}\n")
    (workdir / "s.yaml").write_text("extends: _base.yaml\nname: s\n")
    (workdir / "params.yaml").write_text("train: {epochs: 8, lr: 0.2}\n")
    result = invoke("show", "s.yaml", "--params", "params.yaml", "--set", "train.lr=0.05")
    assert result.exit_code == 0, result.output
    (shown,) = yaml_documents(result.stdout)
    expected = load_spec(workdir / "s.yaml", ["train.epochs=8", "train.lr=0.05"])
    assert shown == expected.to_plain()
    assert shown["model"]["depth"] == 20 and shown["train"]["lr"] == 0.05
    assert shown["train"]["milestones"] == [4, 6]  # the default schedule, resolved for 8 epochs
    assert result.stdout.startswith("# s.yaml\n")


def test_show_of_a_bad_override_exits_2_naming_it(workdir):
    (workdir / "s.yaml").write_text("name: s\n")
    result = invoke("show", "s.yaml", "--set", "train.lr=fast")
    assert result.exit_code == 2 and "(--set train.lr=fast) train.lr" in result.output


# ---------------------------------------------------------------------------------------------- dry run

def test_dry_run_says_what_each_seed_would_do_and_why_and_writes_nothing(workdir):
    (workdir / "s.yaml").write_text("name: s\nseeds: [0, 1, 2, 3]\ntrain: {epochs: 4}\n")
    spec = load_spec(workdir / "s.yaml")
    done, stale, partial = (RunFolder.of(spec, seed) for seed in (0, 1, 2))
    for folder in (done, stale, partial):
        folder.root.mkdir(parents=True)
    done.write_spec(dump_spec(spec))
    done.write_metrics({"final_test_acc": 0.5})
    done.write_completion({"spec_name": "s", "seed": 0})
    stale.write_spec(dump_spec(load_spec(workdir / "s.yaml", ["train.lr=0.2"])))
    stale.write_metrics({"final_test_acc": 0.4})
    partial.write_spec(dump_spec(spec))
    partial.write_history([{"epoch": 1, "train_loss": 4.0}, {"epoch": 2, "train_loss": 3.0}])
    partial.last.write_bytes(b"checkpoint")
    before = sorted(p for p in workdir.rglob("*"))

    result = invoke("run", "s.yaml", "--dry-run")
    assert result.exit_code == 2, result.output  # seed 1 would be refused, so the dry run says so in its code
    out = result.stdout
    assert "s seed 0: done -> skip (--force retrains)" in out
    assert "s seed 1: stale -> refuse, exit 2 (--force replaces it; --set name=s-2 keeps both)" in out
    assert "train.lr: 0.2 -> 0.1" in out
    assert "s seed 2: partial -> resume after epoch 2 of 4" in out
    assert "s seed 3: todo -> train epochs 1-4" in out
    assert f"folder: {RunFolder.of(spec, 3).root}" in out
    assert f"sqlite:///{workdir / 'mlflow.db'} experiment 'auxcli' run s-s3" in out
    assert "dry run: 4 runs (1 done, 0 incomplete, 1 stale, 1 partial, 1 todo)" in out
    assert sorted(p for p in workdir.rglob("*")) == before  # no store, no folder, no file

    forced = invoke("run", "s.yaml", "--dry-run", "--force", "--seed", "1").stdout
    assert "s seed 1: stale -> retrain from epoch 1 (--force)" in forced and "seed 0" not in forced


# ---------------------------------------------------------------------------------------------- sweeps

@pytest.mark.parametrize(("value", "parts"), [
    ("0.1,0.05", ["0.1", "0.05"]),
    ("[0,1]", ["[0,1]"]),
    ("[0,1],[2]", ["[0,1]", "[2]"]),
    ("{a: 1, b: 2}", ["{a: 1, b: 2}"]),
    ("'a,b',c", ["'a,b'", "c"]),
    ("resnet", ["resnet"]),
])
def test_top_level_commas_split_values_brackets_and_quotes_do_not(value, parts):
    assert split_values(value) == parts


def test_swept_keys_make_a_grid_and_lists_stay_one_value():
    grid = parse_grid(["train.lr=0.1,0.05", "seeds=[0,1]", "model.depth=8,14", "~transfer"])
    assert grid.fixed == ("seeds=[0,1]", "~transfer")
    points = grid.points()
    assert [suffix for _, suffix in points] == ["lr0.1-depth8", "lr0.1-depth14", "lr0.05-depth8", "lr0.05-depth14"]
    assert points[1][0] == ["seeds=[0,1]", "~transfer", "train.lr=0.1", "model.depth=14"]
    with pytest.raises(SpecError, match="once per key"):
        parse_grid(["train.lr=0.1,0.2", "train.lr=0.3,0.4"])
    with pytest.raises(SpecError, match="non-empty value"):
        parse_grid(["train.lr=0.1,"])


def test_a_swept_transfer_takes_the_source_of_its_own_point(workdir):
    (workdir / "a.yaml").write_text("name: a\n")
    (workdir / "b.yaml").write_text("name: b\ntransfer: {from: a, mode: finetune}\n")
    (workdir / "c.yaml").write_text("name: c\ntransfer: {from: init, mode: linear}\n")
    _, loaded = load_grid([workdir / "a.yaml", workdir / "b.yaml", workdir / "c.yaml"], ["model.depth=8,14"])
    names = {item.spec.name: item for item in loaded}
    assert set(names) == {f"{n}-depth{d}" for n in "abc" for d in (8, 14)}
    assert names["b-depth8"].spec.transfer.from_ == "a-depth8"
    assert names["b-depth14"].spec.transfer.from_ == "a-depth14"
    assert names["c-depth8"].spec.transfer.from_ == "init"
    for item in loaded:  # each point's overrides make exactly its spec from its file (what a bundle records)
        assert load_spec(item.file, item.overrides) == item.spec
    assert names["b-depth14"].overrides == ["model.depth=14", "name=b-depth14", "transfer.from=a-depth14"]


def test_plan_shows_the_grid_first_then_every_point(workdir):
    (workdir / "s.yaml").write_text("name: s\n")
    result = invoke("plan", "s.yaml", "--set", "train.lr=0.1,0.05", "--set", "seeds=[0,1]")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == ["sweep: train.lr in [0.1, 0.05]", "grid: 2 points per spec"]
    assert "s-lr0.1 " in result.stdout and "s-lr0.05 " in result.stdout
    assert lines[-1] == "2 specs, 4 runs: 0 done, 0 partial, 4 todo"


@pytest.mark.slow
def test_a_2x2_sweep_trains_four_named_points_quietly(workdir, tiny_spec):
    spec = tiny_spec("grid")
    result = invoke("-q", "run", spec, "--set", "train.lr=0.1,0.05", "--set", "train.batch_size=32,64",
                    "--set", "train.epochs=1", "--set", "train.milestones=[]")
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" not in result.stdout  # -q: no progress
    assert len(re.findall(r"-s0: run folder \S*runs/grid-lr\S+/seed-0\n", result.stdout)) == 4  # where each is
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("auxcli").experiment_id
    seeds = client.search_runs([experiment], filter_string="tags.`auxcli.seed` = '0'")
    got = {r.info.run_name: (r.data.params["train.lr"], r.data.params["train.batch_size"]) for r in seeds}
    assert got == {"grid-lr0.1-batch_size32-s0": ("0.1", "32"), "grid-lr0.1-batch_size64-s0": ("0.1", "64"),
                   "grid-lr0.05-batch_size32-s0": ("0.05", "32"), "grid-lr0.05-batch_size64-s0": ("0.05", "64")}
    assert all(r.info.status == "FINISHED" for r in seeds)
    metrics = json.loads((workdir / "runs/grid-lr0.05-batch_size32/seed-0/metrics.json").read_text())
    assert metrics["spec_name"] == "grid-lr0.05-batch_size32"
    models = client.search_logged_models([experiment])
    assert sorted(m.name for m in models) == ["grid-lr0_05-batch_size32", "grid-lr0_05-batch_size64",
                                              "grid-lr0_1-batch_size32", "grid-lr0_1-batch_size64"]


def test_ui_prints_a_link_to_the_experiments_runs_as_model_training(workdir, monkeypatch):
    import auxcli.ui

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.create_experiment("study")  # recorded before auxcli tagged experiments
    monkeypatch.setattr(auxcli.ui, "serve_ui", lambda uri, host, port, on_ready: on_ready("http://127.0.0.1:5123"))
    result = invoke("ui", "--port", "5123", "--experiment", "study")
    assert result.exit_code == 0, result.output
    assert (f"runs of experiment 'study': http://127.0.0.1:5123/#/experiments/{experiment}"
            "?workflowType=machine_learning") in result.stdout
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    assert "no experiment 'other' yet" in invoke("ui", "--experiment", "other").stdout
