"""Beyond the study: the specs/beyond/ suite end to end (shrunk by --set), its spec rules, and the report's
"beyond the study" table."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.report.aggregate import aggregate
from auxcli.report.beyond import BEYOND_ROWS
from auxcli.report.collect import RunRecord
from auxcli.report.render import render
from auxcli.report.tables import build_report
from auxcli.spec import Spec
from auxcli.specfile import load_spec

BEYOND = Path(__file__).resolve().parent.parent / "specs" / "beyond"
def shrink(data_root: Path) -> list[str]:
    """--set overrides that make a beyond spec tiny: generated data, 1 epoch, 4 base channels, one thread."""
    data = f"{{dataset: synthetic, root: {data_root.as_posix()}, synthetic: {{train_per_class: 4, test_per_class: 2}}}}"
    return ["--set", "seeds=[0]", "--set", "runtime.threads=1", "--set", f"data={data}",
            "--set", "train.epochs=1", "--set", "train.milestones=[]", "--set", "train.batch_size=64",
            "--set", "train.eval_batch_size=200", "--set", "model.base_width=4"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_beyond_specs_are_the_issue_s_experiments():
    specs = {path.stem: load_spec(path) for path in BEYOND.glob("[!_]*.yaml")}
    assert all(spec.name == stem for stem, spec in specs.items())
    assert set(specs) == {row.key for row in BEYOND_ROWS} | {row.baseline for row in BEYOND_ROWS}
    resnet = [s for s in specs.values() if s.model.backbone == "resnet"]
    assert {s.model.depth for s in resnet} == {110} and all(s.train.epochs == 300 for s in resnet)
    assert specs["beyond-rotation"].task.aux.kind == "rotation"
    assert specs["beyond-sla"].task.joint == "sla" and specs["beyond-sla"].augment.rotation.copies == "all"
    wrn = [s for s in specs.values() if s.model.backbone == "wrn"]
    assert len(wrn) == 3 and all((s.model.depth, s.model.widen_factor, s.model.dropout) == (28, 10, 0.3)
                                 for s in wrn)
    assert all(s.train.milestones == [60, 120, 160] and s.train.gamma == 0.2 for s in wrn)
    assert specs["beyond-wrn28-10-cutout"].augment.cutout.size == 8
    assert specs["beyond-wrn28-10-ricap"].augment.ricap.beta == 0.3


@pytest.mark.parametrize(("data", "path", "message"), [
    ({"task": {"joint": "sla"}}, "augment.rotation", "SLA's joint labels pair each class"),
    ({"task": {"joint": "sla", "aux": {"kind": "rotation"}}, "augment": {"rotation": {}}}, "task.aux",
     "replaces the auxiliary head"),
    ({"task": {"joint": "sla", "labels": "none", "aux": None}, "augment": {"rotation": {}}}, "task.labels",
     "need a label set"),
    ({"task": {"joint": "sla"}, "augment": {"rotation": {}, "ricap": {}}}, "augment.ricap", "one label per image"),
    ({"task": {"aux": {"kind": "rotation"}}}, "augment.rotation", "needs the rotation augmentation"),
    ({"model": {"backbone": "wrn", "depth": 28}}, "model.widen_factor", "wrn needs its widening factor"),
    ({"model": {"backbone": "wrn", "depth": 26, "widen_factor": 2}}, "model.depth", "not a valid wrn depth"),
    ({"model": {"widen_factor": 4}}, "model.widen_factor", "Wide ResNet widening factor"),
    ({"model": {"dropout": 0.3}}, "model.dropout", "between the convs"),
])
def test_spec_rules_of_rotation_sla_and_wrn(data, path, message):
    from auxcli.spec import CrossFieldErrors

    with pytest.raises(CrossFieldErrors) as info:
        Spec(name="x", **data)
    assert any(p.path == path and message in p.message for p in info.value.problems), info.value.problems


def test_wrn_depth_rule_names_6n_plus_4(workdir):
    (workdir / "w.yaml").write_text("name: w\nmodel: {backbone: wrn, depth: 26, widen_factor: 2}\n")
    result = invoke("validate", "w.yaml")
    assert result.exit_code == 2
    assert "model.depth: 26 is not a valid wrn depth; allowed: 6n+4 with n >= 1 (10, 16, 22, 28, ...)" in result.output


def _record(spec: str, seed: int, **metrics: float) -> RunRecord:
    return RunRecord(f"{spec}-{seed}", f"{spec}-s{seed}", "FINISHED", spec, seed, metrics=metrics)


def test_beyond_table_compares_each_spec_with_its_backbones_plain_run():
    records = [
        _record("beyond-resnet110-plain", 0, final_test_acc=0.70),
        _record("beyond-resnet110-plain", 1, final_test_acc=0.72),
        _record("beyond-sla", 0, final_test_acc=0.73, final_test_acc_aggregated=0.75),
        _record("beyond-wrn28-10-ricap", 0, final_test_acc=0.83),
        _record("mini-beyond-rotation", 0, final_test_acc=0.5),
        _record("mini-beyond-resnet110-plain", 0, final_test_acc=0.4),
        _record("something-else", 0, final_test_acc=0.1),
    ]
    report = build_report(aggregate(records))
    assert [g.spec_name for g in report.generic] == ["something-else"]  # the beyond specs are all claimed
    study, mini = report.beyond
    assert (study.suite, mini.suite) == ("", "mini")
    rows = {row.label: row for row in study.rows}
    single = rows["ResNet-110, SLA joint labels, single inference"]
    assert (single.value, single.baseline, single.n, single.baseline_n) == (0.73, pytest.approx(0.71), 1, 2)
    assert single.delta_pp == pytest.approx(2.0) and single.baseline_spec == "beyond-resnet110-plain"
    aggregated = rows["ResNet-110, SLA joint labels, aggregated inference"]
    assert aggregated.value == 0.75 and aggregated.delta_pp == pytest.approx(4.0)
    ricap = rows["WRN-28-10 + RICAP beta 0.3 (Takahashi et al. 2018)"]
    assert ricap.value == 0.83 and ricap.delta_pp is None and ricap.baseline is None
    assert ricap.missing_command == "auxcli run specs/beyond/beyond-wrn28-10-plain.yaml"
    rotation = rows["ResNet-110 + rotation head (RotNet, all 4 copies)"]
    assert rotation.value is None and rotation.missing_command == "auxcli run specs/beyond/beyond-rotation.yaml"
    mini_rotation = next(r for r in mini.rows if r.key == "beyond-rotation")
    assert mini_rotation.delta_pp == pytest.approx(10.0)
    text = render(report, "text")
    assert "Beyond the study" in text and "+2.00" in text and "+4.00" in text
    assert "beyond,,beyond-sla," in render(report, "csv")
    assert json.loads(render(report, "json"))["beyond"][0]["rows"][1]["delta_pp"] == pytest.approx(2.0)
    assert "Beyond the study" in render(report, "latex")


@pytest.mark.slow
def test_beyond_suite_runs_end_to_end_and_fills_the_beyond_table(workdir):
    resnet = [BEYOND / f"{n}.yaml" for n in ("beyond-resnet110-plain", "beyond-rotation", "beyond-sla")]
    wrn = [BEYOND / f"{n}.yaml" for n in ("beyond-wrn28-10-plain", "beyond-wrn28-10-cutout",
                                          "beyond-wrn28-10-ricap")]
    result = invoke("run", *resnet, *shrink(workdir / "data"), "--set", "model.depth=8")
    assert result.exit_code == 0, result.output
    result = invoke("run", *wrn, *shrink(workdir / "data"), "--set", "model.depth=10",
                    "--set", "model.widen_factor=1")
    assert result.exit_code == 0, result.output

    def metrics(name: str) -> dict:
        return json.loads((workdir / f"runs/{name}/seed-0/metrics.json").read_text())

    rotation = metrics("beyond-rotation")
    assert {"final_test_acc", "final_train_aux_acc", "final_test_aux_acc"} <= set(rotation)
    sla = metrics("beyond-sla")
    assert {"final_test_acc", "final_test_acc_aggregated", "final_test_joint_acc"} <= set(sla)
    assert "final_train_aux_acc" not in sla  # one joint head, no auxiliary head
    assert all(0.0 <= sla[k] <= 1.0 for k in ("final_test_acc", "final_test_acc_aggregated"))
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["auxcli"]).set_index("tags.mlflow.runName")
    assert runs.loc["beyond-sla-s0", "metrics.test_acc_aggregated"] == pytest.approx(sla["final_test_acc_aggregated"])
    assert runs.loc["beyond-wrn28-10-ricap-s0", "params.model.backbone"] == "wrn"

    # The specs ran shrunk (two sets of --set), so the report reads the workspace's results: no specs named
    # (with BEYOND and no overrides, every run would be of other settings than the files as written).
    result = invoke("report", "--format", "json")
    assert result.exit_code == 0, result.output
    (table,) = json.loads(result.stdout)["beyond"]
    assert len(table["rows"]) == len(BEYOND_ROWS)
    for row in table["rows"]:
        assert row["n"] == 1 and row["baseline_n"] == 1 and row["missing_command"] is None, row
        assert row["delta_pp"] == pytest.approx((row["value"] - row["baseline"]) * 100, abs=1e-3)
    by_label = {row["label"]: row for row in table["rows"]}
    assert by_label["ResNet-110, SLA joint labels, aggregated inference"]["value"] == pytest.approx(
        sla["final_test_acc_aggregated"])


def test_beyond_figure_draws_each_spec_and_its_plain_run_dotted():
    from auxcli.report.plots import report_figures

    records = [_record("beyond-resnet110-plain", 0, final_test_acc=0.7),
               _record("beyond-sla", 0, final_test_acc=0.73, final_test_acc_aggregated=0.75)]
    asked: list[tuple[tuple[str, ...], str]] = []

    def fetch(run_ids, metric):
        asked.append((tuple(run_ids), metric))
        return {run_id: [(1, 0.1), (2, 0.2)] for run_id in run_ids}

    figures = dict(report_figures(build_report(aggregate(records)), fetch))
    assert set(figures) == {"beyond-test-acc.png"}
    lines = figures["beyond-test-acc.png"].axes[0].get_lines()
    labels = {line.get_label(): line.get_linestyle() for line in lines}
    assert labels == {"beyond-sla (test acc)": "-", "beyond-sla (test acc aggregated)": "-",
                      "beyond-resnet110-plain (test acc)": ":"}
    assert (("beyond-sla-0",), "test_acc_aggregated") in asked


def test_generic_rows_describe_sla_and_wide_resnets():
    from auxcli.report.tables import describe_model, describe_task
    from auxcli.tracking import flatten

    sla = flatten(Spec(name="s", task={"joint": "sla"}, augment={"rotation": {}}).to_plain())
    assert describe_task({k: str(v) for k, v in sla.items()}) == "gt x rotation (SLA joint)"
    rotation = flatten(Spec(name="r", task={"aux": {"kind": "rotation"}}, augment={"rotation": {}}).to_plain())
    assert describe_task({k: str(v) for k, v in rotation.items()}) == "gt + rotation"
    wrn = flatten(Spec(name="w", model={"backbone": "wrn", "depth": 28, "widen_factor": 10}).to_plain())
    assert describe_model({k: str(v) for k, v in wrn.items()}) == "wrn-28-10"
    assert describe_model({"model.backbone": "resnet", "model.depth": "110", "model.widen_factor": "null"}) \
        == "resnet-110"
