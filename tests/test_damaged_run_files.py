"""Damaged run files and caches (issue 21): merge-conflict markers in `history.csv`, a broken
`metrics.json`, bad values in the `plan --estimate` rate cache. Each is named with what to do, never the
catch-all "unexpected" line. One tiny finished run and one partial run serve every case."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from auxcli.cli import app

CONFLICT = "<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> other\n"


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    from auxcli.specfile import load_spec
    from auxcli.train.runner import run_seed

    from tests.conftest import project_folder, TINY_SPEC

    root = tmp_path_factory.mktemp("damaged")
    with project_folder(root):
        for name in ("done", "part"):
            (root / f"{name}.yaml").write_text(TINY_SPEC.format(name=name, data_root=(root / "data").as_posix()))
        assert invoke("run", "done.yaml").exit_code == 0
        run_seed(load_spec(root / "part.yaml"), 0, stop_after_epoch=1)
    return root


@pytest.fixture
def at(project, monkeypatch, tmp_path):
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    saved = tmp_path / "saved"
    shutil.copytree(project / "runs", saved)
    yield project
    shutil.rmtree(project / "runs")
    shutil.copytree(saved, project / "runs")


def _clean(result, code: int, *words) -> None:
    assert result.exit_code == code, result.output
    assert "unexpected" not in result.output and "Traceback" not in result.output
    for word in words:
        assert word in result.output, result.output


@pytest.mark.parametrize("text", [CONFLICT.format('{"a": 1}', '{"a": 2}'), '{"final_test_acc": 0.5', "[1, 2]", ""])
def test_a_broken_metrics_json_is_named(at, text):
    (at / "runs" / "done" / "seed-0" / "metrics.json").write_text(text)
    for command in (["run", "done.yaml"], ["results", "done.yaml"]):
        _clean(invoke(*command), 2, "metrics.json", "--force")


def _damaged(history, damage: str) -> str:
    header, row = history.read_text().splitlines()[:2]
    return {"conflict": header + "\n" + CONFLICT.format(row, row),
            "extra-cell": f"{header}\n{row},1,2\n",
            "missing-cell": f"{header}\n{row.rsplit(',', 2)[0]}\n",
            "words": f"{header}\n" + ",".join(["fast"] * len(row.split(","))) + "\n"}[damage]


DAMAGES = ["conflict", "extra-cell", "missing-cell", "words"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_history_csv_of_a_finished_run_is_named(at, damage, tmp_path):
    history = at / "runs" / "done" / "seed-0" / "history.csv"
    history.write_text(_damaged(history, damage))
    for command in (["results", "done.yaml"], ["bundle", "runs/done/seed-0", "-o", tmp_path / "b.tar.gz"]):
        _clean(invoke(*command), 2, "history.csv", "damaged", "--force")
    assert not (at / "results" / "history" / "done").exists() and not (tmp_path / "b.tar.gz").exists()


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_history_csv_of_a_partial_run_is_rewritten_from_last_pt(at, damage):
    history = at / "runs" / "part" / "seed-0" / "history.csv"
    history.write_text(_damaged(history, damage))
    _clean(invoke("plan", "part.yaml"), 0, "partial")  # plan needs no epoch count
    _clean(invoke("run", "part.yaml", "--dry-run"), 2, "history.csv", "damaged", "last.pt")
    # resuming takes the history from last.pt, written with it after every epoch: the file is rewritten whole
    _clean(invoke("run", "part.yaml"), 0)
    assert [float(row.split(",")[0]) for row in history.read_text().splitlines()[1:]] == [1.0, 2.0]


@pytest.mark.parametrize("cache", ['{"k": "fast"}', "[1, 2]", '{"k": -1, "j": NaN}', "<<<<<<< HEAD\n", '{"k": true}'])
def test_bad_values_in_the_rate_cache_are_measured_again(at, tmp_path, cache):
    path = tmp_path / "rates.json"
    path.write_text(cache)
    result = invoke("plan", "done.yaml", "--estimate", "--cache", path)
    _clean(result, 0, "done")
    rates = json.loads(path.read_text())
    assert rates and all(isinstance(v, float) and v > 0 for v in rates.values())
