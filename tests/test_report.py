"""`auxcli report` and `auxcli ui`: the study's numbers, pure aggregation, every rendering, and end to end
against a store filled by real tiny runs (`auxcli run` on generated data)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import socket
import statistics
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.report.aggregate import aggregate, mean_curve, stat
from auxcli.report.collect import RunRecord
from auxcli.report.paper import TABLES, match_key
from auxcli.report.render import FORMATS, render
from auxcli.report.tables import SpecRef, build_report
from tests.conftest import project_folder

STUDY_MD = Path(__file__).resolve().parents[1] / "docs" / "study.md"  # the study, in the repository


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def rec(name: str | None, seed: int | None = 0, status: str = "FINISHED", start: int = 0, run_id: str = "",
        params: dict | None = None, tags: dict | None = None, **metrics: float) -> RunRecord:
    tags = {**({"auxcli.spec_name": name} if name else {}), **(tags or {})}
    return RunRecord(run_id or f"{name}-{seed}-{status}-{start}", f"{name}-s{seed}", status, name, seed, start,
                     dict(metrics), dict(params or {}), tags)


def table(report, table_id: str, suite: str = ""):
    return next(t for t in report["tables"] if t["id"] == table_id and t["suite"] == suite)


def row(tbl, key: str):
    return next(r for r in tbl["rows"] if r["key"] == key)


# ---------------------------------------------------------------------------------------------- paper numbers

def test_paper_numbers_are_the_studys():
    t = {tb.id: {r.key: r for r in tb.rows} for tb in TABLES}
    assert t["table5"]["table5-cutout-aux"].values == {"test": 0.7618}
    assert t["table5"]["table5-cutout-aux"].std == {"test": 0.0030}
    assert t["table2"]["table2-probe-init"].values == {"train": 0.0125, "test": 0.0355}
    assert t["table3"]["table1-gt"].values == {"train": 0.9999, "test": 0.8064}
    assert t["table4"]["table4-ricap"].values == {"train": 0.6985}
    assert [c.metric for c in TABLES[3].columns] == ["final_train_aux_acc"]  # Table 4: the aux task alone


def test_paper_numbers_match_study_md_table_by_table():
    text = STUDY_MD.read_text(encoding="utf-8")
    sections = re.split(r"^Table (\d):", text, flags=re.MULTILINE)
    found = {f"table{sections[i]}": sections[i + 1] for i in range(1, len(sections), 2)}
    for tb in TABLES:
        lines = [ln for ln in found[tb.id].splitlines() if ln.startswith("|") and "%" in ln]
        assert len(lines) == len(tb.rows), tb.id
        for line, prow in zip(lines, tb.rows, strict=True):
            numbers = [float(x) / 100 for x in re.findall(r"(\d+\.\d+)%", line)]
            expected = [prow.values[c.name] for c in tb.columns]
            expected += [prow.std[c.name] for c in tb.columns] if prow.std else []
            assert numbers == pytest.approx(expected, abs=1e-9), (tb.id, prow.key, line)


def test_names_map_to_rows_by_exact_name_or_suite_prefix():
    assert match_key("table1-gt") == ("", "table1-gt")
    assert match_key("mini-table1-gt") == ("mini", "table1-gt")
    assert match_key("mini-table3-finetune-gt") == ("mini", "table3-finetune-gt")
    assert match_key("my-table5-ricap-aux") == ("my", "table5-ricap-aux")
    assert match_key("table1-gt-long") is None
    assert match_key("smoke") is None


# ---------------------------------------------------------------------------------------------- aggregate

def test_stat_is_mean_and_sample_std_and_n():
    s = stat([0.5, 0.7, 0.9])
    assert s.mean == pytest.approx(0.7)
    assert s.std == pytest.approx(statistics.stdev([0.5, 0.7, 0.9]))  # ddof=1
    assert s.std == pytest.approx(0.2)
    assert s.n == 3


def test_a_single_run_has_no_std():
    s = stat([0.42])
    assert (s.mean, s.std, s.n) == (0.42, None, 1)
    assert stat([]) is None


def test_aggregate_groups_finished_runs_and_counts_the_rest():
    agg = aggregate([
        rec("a", 0, final_test_acc=0.5), rec("a", 1, final_test_acc=0.7),
        rec("a", 2, "FAILED"), rec("a", 3, "RUNNING"), rec("b", 0, "KILLED"),
        rec("c", 0, final_test_acc=0.3),
    ])
    assert list(agg.groups) == ["a", "c"]
    a = agg.groups["a"].stat("final_test_acc")
    assert (a.mean, a.n) == (pytest.approx(0.6), 2) and a.std == pytest.approx(math.sqrt(0.02))
    assert agg.groups["c"].stat("final_test_acc").std is None
    assert agg.excluded_counts() == {"FAILED": 1, "KILLED": 1, "RUNNING": 1}
    assert agg.excluded_counts("a") == {"FAILED": 1, "RUNNING": 1}
    assert agg.spec_names() == ["a", "b", "c"]


def test_a_rerun_seed_counts_once_the_latest_finished_run():
    agg = aggregate([rec("a", 0, start=1, final_test_acc=0.1), rec("a", 0, start=2, final_test_acc=0.9),
                     rec("a", 1, start=1, final_test_acc=0.5)])
    group = agg.groups["a"]
    assert group.n == 2
    assert group.stat("final_test_acc").mean == pytest.approx(0.7)
    assert len(agg.superseded) == 1 and agg.superseded[0].metrics["final_test_acc"] == 0.1


def test_report_runs_and_untagged_runs_are_never_aggregated():
    agg = aggregate([rec("a", 0, final_test_acc=0.5), rec(None, None, final_test_acc=0.9),
                     rec("a", 1, tags={"auxcli.report": "true"}, final_test_acc=0.0)])
    assert agg.groups["a"].n == 1
    assert (agg.untagged, agg.report_runs) == (1, 1)


def test_spec_parent_runs_are_never_aggregated():
    agg = aggregate([rec("a", 0, final_test_acc=0.5), rec("a", 1, final_test_acc=0.7),
                     rec("a", None, tags={"auxcli.parent": "true"}, final_test_acc=0.6)])
    assert agg.groups["a"].n == 2 and agg.excluded == () and agg.superseded == ()


def test_aggregate_restricted_to_named_specs():
    agg = aggregate([rec("a", 0), rec("b", 0), rec("b", 1, "FAILED")], only={"a"})
    assert list(agg.groups) == ["a"] and agg.excluded == ()


def test_mean_curve_averages_seeds_epoch_by_epoch():
    steps, values = mean_curve([[(1, 1.0), (2, 3.0), (3, 5.0)], [(1, 3.0), (2, 5.0)]], max_step=2)
    assert steps == [1, 2] and values == [2.0, 4.0]


# ---------------------------------------------------------------------------------------------- tables, render

def _hand_report():
    gt = [rec("mini-table1-gt", s, run_id=f"{s}" * 32, params={"transfer": "null", "task.labels": "gt"},
              final_train_acc=0.9 + s / 100, final_test_acc=0.5) for s in (0, 1)]
    probe = rec("mini-table2-probe-random", 0, run_id="p" * 32, final_train_acc=0.3, final_test_acc=0.2,
                tags={"auxcli.transfer.mode": "linear", "auxcli.transfer.bn": "train",
                      "auxcli.transfer.source_spec": "mini-table1-random", "auxcli.transfer.source_run_id": "r" * 32})
    base = [rec("mini-table5-cutout-base", s, final_test_acc=v) for s, v in ((0, 0.70), (1, 0.72))]
    other = rec("smoke", 0, params={"task.labels": "gt", "task.aux.kind": "crop", "model.backbone": "resnet",
                                    "model.depth": "8"}, final_test_acc=0.25, final_test_aux_acc=0.5)
    records = [*gt, probe, *base, other, rec("mini-table5-cutout-aux", 0, "FAILED")]
    return build_report(aggregate(records), footer={"tracking_uri": "sqlite:///x.db", "experiment": "auxcli"})


def test_report_rows_carry_ours_paper_delta_and_missing_commands():
    data = _hand_report().to_dict()
    assert [t["suite"] for t in data["tables"]] == ["mini"] * 5
    gt = row(table(data, "table1", "mini"), "table1-gt")
    assert gt["values"]["train"] == pytest.approx(0.905) and gt["n"] == 2
    assert gt["std"]["train"] == pytest.approx(statistics.stdev([0.90, 0.91]))
    assert gt["delta_pp"]["train"] == pytest.approx((0.905 - 0.9999) * 100, abs=1e-4)
    assert gt["run_ids"] == ["0" * 32, "1" * 32]
    missing = row(table(data, "table1", "mini"), "table1-superclass")
    assert missing["values"] == {"train": None} and missing["n"] == 0
    assert missing["missing_command"] == "auxcli run specs/mini/mini-table1-superclass.yaml"
    probe = row(table(data, "table2", "mini"), "table2-probe-random")
    assert probe["protocol"] == "linear, BN train"
    assert probe["sources"] == [{"spec": "mini-table1-random", "run_id": "r" * 32}]
    assert row(table(data, "table3", "mini"), "table1-gt")["protocol"] == "none (trained from scratch)"
    aux = row(table(data, "table5", "mini"), "table5-cutout-aux")
    assert aux["excluded"] == {"FAILED": 1} and aux["missing_command"]
    assert row(table(data, "table5", "mini"), "table5-cutout-base")["paper_std"] == {"test": 0.0050}
    (smoke,) = data["generic"]
    assert smoke["spec_name"] == "smoke" and smoke["task"] == "gt + crop" and smoke["model"] == "resnet-8"
    assert smoke["values"]["final_test_aux_acc"] == 0.5 and smoke["std"]["final_test_acc"] is None
    assert data["footer"]["std"] == "sample (ddof=1)" and data["footer"]["excluded"] == {"FAILED": 1}


def test_spec_arguments_map_by_file_stem_and_name_the_missing_spec_files():
    agg = aggregate([rec("custom-name", 0, final_train_acc=0.5)])
    specs = [SpecRef("custom-name", "suite/x-table1-random.yaml"), SpecRef("other", "suite/other.yaml")]
    data = build_report(agg, specs=specs).to_dict()
    t1 = table(data, "table1", "x")
    assert row(t1, "table1-random")["values"]["train"] == 0.5
    assert row(t1, "table1-gt")["missing_command"] == "auxcli run suite/x-table1-gt.yaml"
    assert data["generic"][0]["missing_command"] == "auxcli run suite/other.yaml"


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_the_hand_made_report(fmt):
    text = render(_hand_report(), fmt)
    assert text.endswith("\n")
    if fmt == "text":
        assert "90.50 ± 0.71" in text and "76.02 ± 0.50" in text and "sample standard deviation" in text
        assert "auxcli run specs/mini/mini-table1-superclass.yaml" in text
    if fmt == "github":
        assert "### Table 1" in text and "|---" in text
    if fmt == "latex":
        assert text.count(r"\toprule") == 6 and r"90.50 $\pm$ 0.71" in text and r"train acc \%" in text
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        gt = next(r for r in rows if r["table"] == "table1" and r["key"] == "table1-gt")
        assert float(gt["value"]) == pytest.approx(0.905) and gt["n"] == "2"
        assert {r["table"] for r in rows} == {"table1", "table2", "table3", "table4", "table5", "generic"}
    if fmt == "json":
        data = json.loads(text)
        assert json.loads(json.dumps(data)) == data == _hand_report().to_dict()


# ---------------------------------------------------------------------------------------------- end to end

SPEC = """\
name: {name}
seeds: {seeds}
data: {{dataset: synthetic, root: {data}, synthetic: {{train_per_class: 4, test_per_class: 2}}}}
model: {{backbone: resnet, depth: 8, base_width: 4}}
train: {{epochs: 2, batch_size: 64, milestones: [1], eval_batch_size: 200}}
runtime: {{threads: 1}}
"""
E2E_SPECS = {  # file stem -> (seeds, extra YAML)
    "mini-table1-gt": ([0, 1], ""),
    "mini-table5-cutout-base": ([0, 1], "augment: {cutout: {size: 16}}\n"),
    "mini-table3-finetune-gt": ([0], "transfer: {from: mini-table1-gt, mode: finetune}\n"),
    "tiny-crop": ([0], "task: {aux: {kind: crop}}\n"),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A working folder whose embedded store holds real runs of four specs, one FAILED and one RUNNING run."""
    import mlflow
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("report-store")
    with project_folder(root):
        folder = root / "specs" / "mini"
        folder.mkdir(parents=True)
        for stem, (seeds, extra) in E2E_SPECS.items():
            path = folder / f"{stem}.yaml"
            path.write_text(SPEC.format(name=stem, seeds=seeds, data=(root / "data").as_posix()) + extra)
            result = invoke("run", path)
            assert result.exit_code == 0, result.output
        uri = f"sqlite:///{root / 'mlflow.db'}"
        client = MlflowClient(uri)
        experiment_id = client.get_experiment_by_name("auxcli").experiment_id
        for seed, status in ((2, "FAILED"), (3, None)):
            run = client.create_run(experiment_id, run_name=f"mini-table5-cutout-base-s{seed}",
                                    tags={"auxcli.spec_name": "mini-table5-cutout-base", "auxcli.seed": str(seed)})
            client.log_metric(run.info.run_id, "train_loss", 4.6, step=1)
            if status:
                client.set_terminated(run.info.run_id, status)
    yield root
    mlflow.set_tracking_uri(None)


@pytest.fixture
def in_store(store, monkeypatch):
    monkeypatch.chdir(store)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return store


def search_runs(root: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(experiment_names=["auxcli"])
    finally:
        mlflow.set_tracking_uri(None)
    if "tags.auxcli.parent" in runs:  # a spec's parent run holds its seeds' aggregates, not a seed
        runs = runs[runs["tags.auxcli.parent"].ne("true")]
    return runs[runs["tags.auxcli.report"].ne("true")] if "tags.auxcli.report" in runs else runs


@pytest.mark.slow
def test_report_aggregates_equal_numbers_from_search_runs(in_store):
    result = invoke("report", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    runs = search_runs(in_store)
    finished = runs[runs["status"] == "FINISHED"]

    def expected(name: str, metric: str):
        values = finished.loc[finished["tags.auxcli.spec_name"] == name, f"metrics.{metric}"].dropna()
        return values.mean(), (values.std(ddof=1) if len(values) > 1 else None), len(values)

    checks = [("table1", "table1-gt", "train", "mini-table1-gt", "final_train_acc"),
              ("table2", "table1-gt", "test", "mini-table1-gt", "final_test_acc"),
              ("table5", "table5-cutout-base", "test", "mini-table5-cutout-base", "final_test_acc"),
              ("table3", "table3-finetune-gt", "train", "mini-table3-finetune-gt", "final_train_acc")]
    for table_id, key, column, name, metric in checks:
        got = row(table(data, table_id, "mini"), key)
        mean, std, n = expected(name, metric)
        assert got["values"][column] == pytest.approx(mean), (table_id, key)
        assert got["n"] == n
        assert got["std"][column] == (None if std is None else pytest.approx(std))
        assert sorted(got["run_ids"]) == sorted(finished.loc[finished["tags.auxcli.spec_name"] == name, "run_id"])
    assert row(table(data, "table5", "mini"), "table5-cutout-base")["n"] == 2
    assert row(table(data, "table3", "mini"), "table3-finetune-gt")["std"]["train"] is None  # n=1

    ft = row(table(data, "table3", "mini"), "table3-finetune-gt")
    source_id = finished.loc[(finished["tags.auxcli.spec_name"] == "mini-table1-gt")
                             & (finished["tags.auxcli.seed"] == "0"), "run_id"].item()
    assert ft["protocol"] == "finetune"
    assert ft["sources"] == [{"spec": "mini-table1-gt", "run_id": source_id}]

    (generic,) = data["generic"]
    mean, _, n = expected("tiny-crop", "final_test_aux_acc")
    assert generic["spec_name"] == "tiny-crop" and generic["task"] == "gt + crop" and generic["n"] == n
    assert generic["values"]["final_test_aux_acc"] == pytest.approx(mean)

    assert data["footer"]["excluded"] == {"FAILED": 1, "RUNNING": 1}
    assert row(table(data, "table5", "mini"), "table5-cutout-base")["excluded"] == {"FAILED": 1, "RUNNING": 1}
    assert data["footer"]["std"] == "sample (ddof=1)"
    assert json.loads(json.dumps(data)) == data


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_the_real_store(in_store, fmt):
    result = invoke("report", "--format", fmt)
    assert result.exit_code == 0, result.output
    assert re.search(r"[Tt]able ?5", result.stdout) and "tiny-crop" in result.stdout
    if fmt in ("text", "github"):
        assert "1 FAILED, 1 RUNNING" in result.stdout and "n=1" in result.stdout
        assert "auxcli run specs/mini/mini-table1-superclass.yaml" in result.stdout


@pytest.mark.slow
def test_without_a_store_the_report_reads_the_same_numbers_from_the_run_folders(in_store, tmp_path):
    from_store = json.loads(invoke("report", "--format", "json").stdout)
    absent = tmp_path / "absent.db"  # a fresh clone + dvc pull: run folders, no MLflow store
    result = invoke("report", "--format", "json", "--tracking-uri", f"sqlite:///{absent}", "--plots",
                    "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    from_folders = json.loads((tmp_path / "r" / "report.json").read_text())
    assert "run folders" in from_folders["footer"]["source"] and not absent.exists()
    assert list((tmp_path / "r").glob("*.png"))  # figures drawn from history.csv, logged nowhere
    pairs = [(a, b) for ta, tb in zip(from_store["tables"], from_folders["tables"], strict=True)
             for a, b in zip(ta["rows"], tb["rows"], strict=True)]
    pairs += list(zip(from_store["generic"], from_folders["generic"], strict=True))
    assert any(a["n"] for a, _ in pairs)
    for a, b in pairs:
        assert (b["n"], sorted(b["run_ids"]), b.get("protocol")) == (a["n"], sorted(a["run_ids"]), a.get("protocol"))
        assert b["values"] == pytest.approx(a["values"]) and b["std"] == pytest.approx(a["std"])
        assert [s["spec"] for s in b.get("sources", [])] == [s["spec"] for s in a.get("sources", [])]


@pytest.mark.slow
def test_spec_arguments_restrict_the_report_to_those_specs(in_store):
    result = invoke("report", "specs/mini/mini-table1-gt.yaml", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["generic"] == [] and data["footer"]["excluded"] == {}
    assert row(table(data, "table1", "mini"), "table1-gt")["n"] == 2
    assert row(table(data, "table3", "mini"), "table3-finetune-gt")["n"] == 0  # not named: left out


@pytest.mark.slow
def test_out_writes_the_rendering_and_plots_write_pngs_logged_to_a_report_run(in_store, tmp_path):
    before = json.loads(invoke("report", "--format", "json").stdout)
    result = invoke("report", "--format", "csv", "--out", tmp_path / "r", "--plots")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # --out: files only
    assert (tmp_path / "r" / "report.csv").read_text().startswith("table,suite,key")
    pngs = sorted(p.name for p in (tmp_path / "r").glob("*.png"))
    assert {"figure2-mini.png", "figure3-mini.png", "table5-test-acc-mini.png", "generic-test-acc.png"} <= set(pngs)
    for name in pngs:
        data = (tmp_path / "r" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{in_store / 'mlflow.db'}")
    training = client.get_experiment_by_name("auxcli").experiment_id
    assert not client.search_runs([training], filter_string="tags.`auxcli.report` = 'true'")  # not in the charts
    reports = client.search_runs([client.get_experiment_by_name("auxcli-reports").experiment_id],
                                 filter_string="tags.`auxcli.report` = 'true'")
    assert reports and reports[0].info.run_name == "auxcli-report"
    logged = {a.path for a in client.list_artifacts(reports[0].info.run_id, "figures")}
    assert "figures/figure2-mini.png" in logged
    assert {a.path for a in client.list_artifacts(reports[0].info.run_id, "report")} == {"report/report.json"}

    after = json.loads(invoke("report", "--format", "json").stdout)
    assert after["tables"] == before["tables"] and after["generic"] == before["generic"]


def experiment_id_of(root: Path, name: str = "auxcli") -> str:
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_experiment_by_name(name).experiment_id


@pytest.mark.slow
def test_ui_serves_the_runs_on_a_loopback_port_until_interrupted(in_store):
    from auxcli.tracking import resolve_tracking_uri
    from auxcli.ui import experiment_link, serve_ui

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    seen: dict = {}

    def on_ready(url: str) -> None:  # query the REST API, then "press Ctrl-C"
        seen["url"] = url
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=auxcli",
                                    timeout=30) as resp:
            found = json.load(resp)["experiment"]
        experiment_id = found["experiment_id"]
        seen["kind"] = {t["key"]: t["value"] for t in found.get("tags", [])}.get("mlflow.experimentKind")
        seen["link"] = experiment_link(resolve_tracking_uri(None), "auxcli", url)
        request = urllib.request.Request(
            f"{url}/api/2.0/mlflow/runs/search", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [experiment_id], "max_results": 100}).encode())
        with urllib.request.urlopen(request, timeout=30) as resp:
            seen["names"] = {r["info"]["run_name"] for r in json.load(resp)["runs"]}
        raise KeyboardInterrupt

    serve_ui(resolve_tracking_uri(None), "127.0.0.1", port, on_ready)
    assert seen["url"] == f"http://127.0.0.1:{port}"
    assert seen["kind"] == "custom_model_development"  # MLflow 3's UI: a model-training experiment, not GenAI
    assert seen["link"] == f"http://127.0.0.1:{port}/#/experiments/{experiment_id_of(in_store)}" \
        "?workflowType=machine_learning"
    assert {"mini-table1-gt-s0", "mini-table1-gt-s1", "tiny-crop-s0"} <= seen["names"]
    with pytest.raises(ConnectionRefusedError):  # stopped: nothing listens there any more
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


# ---------------------------------------------------------------------------------------------- errors

def test_report_on_a_missing_store_says_so_with_exit_code_2(workdir):
    result = invoke("report")
    assert result.exit_code == 2
    assert "no MLflow store at" in result.output and "auxcli run" in result.output
    assert not (workdir / "mlflow.db").exists()  # reading never creates a store


def test_report_on_an_empty_or_unknown_experiment_exits_2(workdir):
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}").create_experiment("auxcli")
    result = invoke("report")
    assert result.exit_code == 2
    assert "experiment 'auxcli'" in result.output and "has no runs yet" in result.output
    result = invoke("report", "--experiment", "nope")
    assert result.exit_code == 2
    assert "experiment 'nope' not found" in result.output and "experiments there: Default, auxcli" in result.output


def test_report_on_an_unreachable_server_exits_2(workdir, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    result = invoke("report", "--tracking-uri", f"http://127.0.0.1:{port}")
    assert result.exit_code == 2
    assert "cannot be used" in result.output


def test_ui_on_a_missing_store_exits_2(workdir):
    result = invoke("ui", "--port", "5999")
    assert result.exit_code == 2
    assert "no MLflow store at" in result.output
