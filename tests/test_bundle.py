"""Reproducibility bundles: `auxcli bundle` and `auxcli reproduce` on tiny deterministic CPU runs.

One module-scoped pair of runs (a source and a linear probe transferred from it) serves every test;
tampered bundles are made by rewriting a good one with tarfile.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from auxcli.bundle.archive import MANIFEST, write_bundle
from auxcli.cli import app
from tests.conftest import project_folder

BASE = """\
seeds: [0]
data:
  dataset: synthetic
  root: {data_root}
  synthetic: {{train_per_class: 4, test_per_class: 2}}
model: {{backbone: resnet, depth: 8, base_width: 4}}
train: {{epochs: 2, batch_size: 64, milestones: [1], eval_batch_size: 200}}
runtime: {{threads: 1, deterministic: true}}
"""


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`pre` (extends _base.yaml, run with a --set override) and `probe` (linear probe from `pre`)."""
    root = tmp_path_factory.mktemp("bundle")
    with project_folder(root) as mp:
        (root / "_base.yaml").write_text(BASE.format(data_root=(root / "data").as_posix()))
        (root / "pre.yaml").write_text("extends: _base.yaml\nname: pre\n")
        (root / "probe.yaml").write_text("extends: _base.yaml\nname: probe\n"
                                         "transfer: {from: pre, mode: linear}\n")
        argv = ["run", "pre.yaml", "probe.yaml", "--set", "train.lr=0.05"]
        mp.setattr(sys, "argv", ["auxcli", *argv])  # what a shell would pass; CliRunner leaves sys.argv alone
        result = invoke(*argv)
        assert result.exit_code == 0, result.output
    _reset_determinism()
    return root


@pytest.fixture
def at(trained, monkeypatch):
    monkeypatch.chdir(trained)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield trained
    _reset_determinism()  # the runs here are deterministic; later tests in this process expect the default


def _reset_determinism() -> None:
    import torch

    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


def client(root: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def rewrite(bundle: Path, out: Path, change) -> Path:
    """Copy `bundle` member by member through `change(tar_out, info, data)`, which writes what it wants."""
    with tarfile.open(bundle, "r:gz") as src, gzip.GzipFile(out, "wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as dst:
        for info in src.getmembers():
            change(dst, info, src.extractfile(info).read())
    return out


def table_rows(output: str, run: str) -> list[list[str]]:
    """The comparison table's rows of one run: run, metric, epochs, recorded, reproduced, diff, tol, within."""
    rows = [line.split() for line in output.splitlines() if line.startswith(run + " ")]
    return [row for row in rows if len(row) == 8 and row[-1] in ("yes", "NO")]


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------- the record

def test_finished_run_records_environment_code_data_and_provenance(at):
    repro = at / "runs" / "pre" / "seed-0" / "repro"
    provenance = json.loads((repro / "provenance.json").read_text())
    assert provenance["spec_file"] == "pre.yaml"
    assert [f["path"] for f in provenance["spec_files"]] == ["pre.yaml", "_base.yaml"]  # extends base too
    assert (repro / "spec" / "1-_base.yaml").read_text() == (at / "_base.yaml").read_text()
    assert provenance["overrides"] == ["train.lr=0.05"]
    assert provenance["argv"] == ["auxcli", "run", "pre.yaml", "probe.yaml", "--set", "train.lr=0.05"]
    env = json.loads((repro / "environment.json").read_text())
    assert env["runtime"]["deterministic"] is True and env["runtime"]["device"] == "cpu"
    assert env["determinism"]["use_deterministic_algorithms"] is True
    assert env["determinism"]["cublas_workspace_config"] == ":4096:8"
    assert env["threads"] == 1 and "torch" in env["distributions"]
    data = json.loads((repro / "data.json").read_text())
    assert data["split_sizes"] == {"train": 400, "test": 200}
    assert set(data["files"]) >= {"train", "test", "meta"}
    code = json.loads((repro / "code.json").read_text())
    assert code["git_dirty"] is None and len(code["package"]["source_sha256"]) == 64  # not a git checkout
    probe = json.loads((at / "runs" / "probe" / "seed-0" / "repro" / "provenance.json").read_text())
    assert probe["transfer"]["auxcli.transfer.source_spec"] == "pre"

    run_id = json.loads((at / "runs" / "pre" / "seed-0" / "metrics.json").read_text())["mlflow_run_id"]
    logged = {a.path for a in client(at).list_artifacts(run_id, "repro")}
    assert {"repro/environment.json", "repro/provenance.json", "repro/spec"} <= logged


# ---------------------------------------------------------------------------------------------- bundle

def test_bundle_is_byte_identical_from_folder_spec_and_store(at):
    by_folder = invoke("bundle", "runs/pre/seed-0", "-o", "a.tar.gz")
    by_spec = invoke("bundle", "pre.yaml", "--set", "train.lr=0.05", "-o", "b.tar.gz")  # as it was run
    other = invoke("bundle", "pre.yaml", "-o", "x.tar.gz")  # another identity: not these results
    assert other.exit_code == 2 and "other settings" in other.output and not (at / "x.tar.gz").exists()
    run_id = json.loads((at / "runs" / "pre" / "seed-0" / "metrics.json").read_text())["mlflow_run_id"]
    by_store = invoke("bundle", f"runs:/{run_id}", "-o", "c.tar.gz")
    for result in (by_folder, by_spec, by_store):
        assert result.exit_code == 0, result.output
    a = (at / "a.tar.gz").read_bytes()
    assert a == (at / "b.tar.gz").read_bytes() == (at / "c.tar.gz").read_bytes()

    files = members(at / "a.tar.gz")
    assert list(files)[0] == MANIFEST and list(files)[1:] == sorted(list(files)[1:])
    manifest = json.loads(files[MANIFEST])
    assert set(manifest["members"]) == set(files) - {MANIFEST}
    assert manifest["bundle_id"] in by_folder.output
    assert {"runs/pre/seed-0/repro/environment.json", "runs/pre/seed-0/history.csv",
            "runs/pre/seed-0/mlflow.json", "REPORT.md"} <= set(files)
    assert "runs/pre/seed-0/final.pt" not in files
    mlflow_json = json.loads(files["runs/pre/seed-0/mlflow.json"])
    assert mlflow_json["run_id"] == run_id and mlflow_json["params"]["train.lr"] == "0.05"
    report = files["REPORT.md"].decode()
    assert "| pre " in report and "resnet-8" in report
    with tarfile.open(at / "a.tar.gz", "r:gz") as tar:
        headers = {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in tar.getmembers()}
    assert headers == {(0, 0, 0, "", "", 0o644)}


def test_transfer_bundle_carries_its_source(at):
    result = invoke("bundle", "runs/probe/seed-0", "--with-weights", "-o", "chain.tar.gz")
    assert result.exit_code == 0, result.output
    manifest = json.loads(members(at / "chain.tar.gz")[MANIFEST])
    runs = {r["name"]: r for r in manifest["runs"]}
    assert runs["probe"]["role"] == "target" and runs["pre"]["role"] == "source"
    assert runs["probe"]["transfer_source"] == "runs/pre/seed-0"
    assert {"runs/pre/seed-0/final.pt", "runs/probe/seed-0/final.pt"} <= set(manifest["members"])
    assert len(runs["probe"]["transfer_checkpoint_sha256"]) == 64


def test_bundle_of_an_unfinished_target_is_refused(at):
    result = invoke("bundle", "nothing-here")
    assert result.exit_code == 2
    assert "nothing-here" in result.output and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------- verify

@pytest.fixture
def good(at):
    path = at / "good.tar.gz"
    if not path.exists():
        assert invoke("bundle", "runs/pre/seed-0", "-o", path).exit_code == 0
    return path


def _changed_byte(tar, info, data):
    if info.name.endswith("history.csv"):
        data = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]
    add_file(tar, info.name, data)


def _appended(name):
    def change(tar, info, data):
        add_file(tar, info.name, data)
        if info.name == "REPORT.md":
            add_file(tar, name, b"extra")
    return change


def _symlink(tar, info, data):
    add_file(tar, info.name, data)
    if info.name == "REPORT.md":
        link = tarfile.TarInfo("runs/pre/seed-0/evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)


def _dropped(tar, info, data):
    if not info.name.endswith("metrics.json"):
        add_file(tar, info.name, data)


@pytest.mark.parametrize("change, named, problem", [
    (_changed_byte, "runs/pre/seed-0/history.csv", "changed"),
    (_appended("runs/pre/seed-0/extra.txt"), "runs/pre/seed-0/extra.txt", "not in the manifest"),
    (_appended("../escape.txt"), "../escape.txt", ".."),
    (_appended("/tmp/absolute.txt"), "/tmp/absolute.txt", "absolute"),
    (_symlink, "runs/pre/seed-0/evil", "symbolic link"),
    (_dropped, "runs/pre/seed-0/metrics.json", "missing"),
], ids=["changed-byte", "added-member", "dotdot", "absolute", "symlink", "missing-member"])
def test_tampered_bundle_is_refused_naming_the_member(good, change, named, problem):
    bad = rewrite(good, good.with_name("bad.tar.gz"), change)
    for args in (["--check-only"], ["--runs-dir", "never"]):
        result = invoke("reproduce", bad, *args)
        assert result.exit_code == 2, result.output
        assert named in result.output and problem in result.output
        assert "Traceback" not in result.output
    assert not (good.parent / "never").exists()  # nothing extracted (an escaping member included), nothing trained


def test_damaged_gzip_stream_is_refused(good):
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = good.with_name("damaged.tar.gz")
    bad.write_bytes(bytes(data))
    result = invoke("reproduce", bad, "--check-only")
    assert result.exit_code == 2 and "damaged.tar.gz" in result.output and "Traceback" not in result.output


def test_check_only_on_a_good_bundle_exits_0_without_training(good):
    result = invoke("reproduce", good, "--check-only")
    assert result.exit_code == 0, result.output
    assert "verified" in result.output and "runs/pre/seed-0" in result.output
    final = json.loads((good.parent / "runs" / "pre" / "seed-0" / "metrics.json").read_text())["final_test_acc"]
    assert f"final_test_acc {final:.4g}" in result.output
    assert not list(good.parent.glob("reproduce-*"))


def _forged(good: Path, out: Path, edit) -> Path:
    """A validly manifested bundle whose recorded files `edit(files)` changed (as if recorded so)."""
    files = members(good)
    runs = json.loads(files.pop(MANIFEST))["runs"]
    edit(files)
    write_bundle(out, files, runs)
    return out


def test_changed_data_is_an_error_unless_allowed(good):
    def edit(files):
        record = json.loads(files["runs/pre/seed-0/repro/data.json"])
        record["files"]["train"]["sha256"] = "0" * 64
        files["runs/pre/seed-0/repro/data.json"] = json.dumps(record).encode()
        environment = json.loads(files["runs/pre/seed-0/repro/environment.json"])
        environment["torch"] = "0.0.1"
        files["runs/pre/seed-0/repro/environment.json"] = json.dumps(environment).encode()

    bundle = _forged(good, good.with_name("otherdata.tar.gz"), edit)
    result = invoke("reproduce", bundle, "--runs-dir", "rd-data")
    assert result.exit_code == 2, result.output
    assert "data files differ" in result.output and "train" in result.output and "--allow-data-change" in result.output
    assert "environment torch: recorded 0.0.1, now" in result.output  # the differences come first
    assert not (good.parent / "rd-data" / "pre").exists()


# ---------------------------------------------------------------------------------------------- reproduce

@pytest.mark.slow
def test_reproduce_transfer_chain_gives_identical_metrics(at):
    assert invoke("bundle", "probe", "-o", "chain-noweights.tar.gz").exit_code == 0
    result = invoke("reproduce", "chain-noweights.tar.gz", "--runs-dir", "rd-chain")
    assert result.exit_code == 0, result.output
    for run in ("pre-s0", "probe-s0"):
        rows = table_rows(result.output, run)
        metrics = {row[1]: row for row in rows}
        assert {"final_test_acc", "test_loss", "train_loss"} <= set(metrics)
        assert all(row[5] == "0" and row[-1] == "yes" for row in rows), rows  # exact: deterministic CPU
    assert "environment, code and data as recorded" in result.output
    # Re-runs went to their own experiment; the probe started from the re-trained source.
    store = client(at)
    experiment = store.get_experiment_by_name("auxcli-reproduce")
    runs = {r.info.run_name: r for r in store.search_runs([experiment.experiment_id])
            if "auxcli.stopped_after_epoch" not in r.data.tags}
    checkpoint = runs["probe-s0"].data.tags["auxcli.transfer.checkpoint"]
    assert checkpoint == str((at / "rd-chain" / "pre" / "seed-0" / "final.pt").resolve())
    assert any(a.path == "repro/environment.json" for a in store.list_artifacts(runs["pre-s0"].info.run_id, "repro"))


@pytest.mark.slow
def test_epochs_1_compares_only_epoch_1(good):
    def edit(files):  # a recorded epoch 2 (and summary) that this code cannot reproduce
        rows = list(csv.DictReader(io.StringIO(files["runs/pre/seed-0/history.csv"].decode())))
        rows[1]["test_loss"] = str(float(rows[1]["test_loss"]) + 0.5)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        files["runs/pre/seed-0/history.csv"] = out.getvalue().encode()

    bundle = _forged(good, good.with_name("epoch2.tar.gz"), edit)
    quick = invoke("reproduce", bundle, "--epochs", "1", "--runs-dir", "rd-quick")
    assert quick.exit_code == 0, quick.output
    rows = table_rows(quick.output, "pre-s0")
    assert rows and {row[2] for row in rows} == {"1"}  # epoch 1 only, no summary rows
    history = (good.parent / "rd-quick" / "pre" / "seed-0" / "history.csv").read_text().splitlines()
    assert len(history) == 2  # header and epoch 1: the runner stopped after epoch 1
    assert not (good.parent / "rd-quick" / "pre" / "seed-0" / "metrics.json").exists()

    full = invoke("reproduce", bundle, "--runs-dir", "rd-full")
    assert full.exit_code == 1, full.output
    bad = [row for row in table_rows(full.output, "pre-s0") if row[-1] == "NO"]
    assert [row[1] for row in bad] == ["test_loss"]
    assert abs(float(bad[0][5]) - 0.5) < 1e-6


@pytest.mark.slow
def test_reproduce_starts_a_transfer_from_the_bundled_source_weights(at):
    assert invoke("bundle", "runs/probe/seed-0", "--with-weights", "-o", "chain-weights.tar.gz").exit_code == 0
    result = invoke("reproduce", "chain-weights.tar.gz", "--epochs", "1", "--runs-dir", "rd-weights")
    assert result.exit_code == 0, result.output
    assert {row[2] for row in table_rows(result.output, "probe-s0")} == {"1"}
    assert {row[2] for row in table_rows(result.output, "pre-s0")} == {"1"}
    store = client(at)
    experiment = store.get_experiment_by_name("auxcli-reproduce")
    probe = [r for r in store.search_runs([experiment.experiment_id])
             if r.data.tags.get("auxcli.transfer.checkpoint", "").startswith(str((at / "rd-weights").resolve()))]
    assert len(probe) == 1
    tags = probe[0].data.tags
    assert tags["auxcli.transfer.checkpoint"].endswith("rd-weights/_bundle/runs/pre/seed-0/final.pt")
    recorded = json.loads((at / "runs" / "probe" / "seed-0" / "repro" / "provenance.json").read_text())
    assert tags["auxcli.transfer.checkpoint_sha256"] == recorded["transfer"]["auxcli.transfer.checkpoint_sha256"]
    assert tags["auxcli.stopped_after_epoch"] == "1"


def test_reproduce_never_overwrites_the_original_runs(good):
    before = (good.parent / "runs" / "pre" / "seed-0" / "metrics.json").read_bytes()
    result = invoke("reproduce", good, "--runs-dir", "runs")
    assert result.exit_code == 2, result.output
    assert "pre/seed-0" in result.output and "fresh --runs-dir" in result.output
    assert (good.parent / "runs" / "pre" / "seed-0" / "metrics.json").read_bytes() == before
    assert not (good.parent / "runs" / "_bundle").exists()


def test_deterministic_runtime_sets_and_clears_the_flags(monkeypatch):
    import torch

    from auxcli.spec import RuntimeSpec
    from auxcli.train.runtime import resolve_runtime

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # so that monkeypatch restores the variable's absence
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    try:
        resolve_runtime(RuntimeSpec(device="cpu", deterministic=True))
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark
        assert __import__("os").environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        resolve_runtime(RuntimeSpec(device="cpu", deterministic=False))  # the next spec in the same process
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    finally:
        _reset_determinism()


def test_record_finds_extends_bases_once_and_dvc_md5(tmp_path):
    from auxcli.runrecord import data_record, spec_sources
    from auxcli.spec import DataSpec

    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "_a.yaml").write_text("extends: ../_b.yaml\ntrain: {epochs: 3}\n")
    (tmp_path / "_b.yaml").write_text("extends: common/_a.yaml\n")  # a cycle: the loader reports it, not us
    (tmp_path / "spec.yaml").write_text("extends: [common/_a.yaml, _b.yaml]\nname: x\n")
    expected = [tmp_path / "spec.yaml", tmp_path / "common" / "_a.yaml", tmp_path / "_b.yaml"]
    assert [p.resolve() for p in spec_sources(tmp_path / "spec.yaml")] == [p.resolve() for p in expected]

    folder = tmp_path / "data" / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(b"abc")
    (tmp_path / ".dvc").mkdir()  # the repository root DVC's files are read up to
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123456789abcdef.dir\n  path: data\n")
    record = data_record(DataSpec(dataset="cifar100", root=str(tmp_path / "data")), {"train": 1})
    assert record["files"] == {"train": {"sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                                         "size": 3}}
    assert record["dvc"] == {"path": "data", "md5": "0123456789abcdef.dir"}
    assert record["split_sizes"] == {"train": 1}


def test_bundle_of_an_unknown_mlflow_run_is_refused(at):
    result = invoke("bundle", "runs:/" + "f" * 32)
    assert result.exit_code == 2 and "ffffffff" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_epochs_with_a_transfer_without_weights_trains_the_source_in_full(at):
    assert invoke("bundle", "probe", "-o", "chain-quick.tar.gz").exit_code == 0
    result = invoke("reproduce", "chain-quick.tar.gz", "--epochs", "1", "--runs-dir", "rd-chain-quick")
    assert result.exit_code == 0, result.output
    assert "runs/pre/seed-0: trained in full" in result.output
    assert (at / "rd-chain-quick" / "pre" / "seed-0" / "metrics.json").is_file()  # finished: probe needs final.pt
    assert not (at / "rd-chain-quick" / "probe" / "seed-0" / "metrics.json").exists()  # stopped after epoch 1
    assert {row[2] for row in table_rows(result.output, "probe-s0")} == {"1"}
    assert all(row[-1] == "yes" and row[5] == "0" for row in table_rows(result.output, "probe-s0"))


def test_dvc_md5_of_a_relative_data_root(workdir):
    """Specs write `root: data`; its parents include `.`, whose empty name must not break the search."""
    from auxcli.runrecord import dvc_md5

    (workdir / ".dvc").mkdir()
    (workdir / "data").mkdir()
    assert dvc_md5(Path("data")) is None
    (workdir / "data.dvc").write_text("outs:\n- md5: feed.dir\n  path: data\n")
    assert dvc_md5(Path("data"))["md5"] == "feed.dir"


def test_dvc_md5_of_data_made_by_the_pipelines_data_stage(workdir):
    """`auxcli data prepare` runs as the `data` stage: its md5 is in dvc.lock, not in a .dvc file."""
    from auxcli.runrecord import dvc_md5

    (workdir / ".dvc").mkdir()
    (workdir / "data" / "synthetic").mkdir(parents=True)
    (workdir / "dvc.lock").write_text("schema: '2.0'\nstages:\n  data:\n    outs:\n    - path: data\n"
                                       "      md5: cafe.dir\n")
    assert dvc_md5(Path("data/synthetic")) == {"path": "data", "md5": "cafe.dir"}


@pytest.mark.parametrize(("metric", "recorded", "allowed"), [
    ("final_test_acc", 0.6, 0.01),       # accuracies: 1 percentage point
    ("test_aux_miou", 0.3, 0.01),        # mIoU: 1 point
    ("train_loss", 2.0, 0.1),            # losses: 5% of the recorded value
    ("lr", 0.1, 0.1 * 1e-9),             # the learning rate: 1e-9 relative
    ("seeds_finished", 4.0, 0.04),       # anything else: 1%
])
def test_reproduce_default_tolerances_follow_the_metric_kind(metric, recorded, allowed):
    """README "Reproducibility bundles": the tolerances a non-exact re-run is compared with."""
    from auxcli.bundle.reproduce import _tolerance

    assert _tolerance(metric, recorded, None, exact=False) == pytest.approx(allowed)
    assert _tolerance(metric, recorded, None, exact=True) == 0.0  # deterministic on the recorded device
    assert _tolerance(metric, recorded, 0.5, exact=True) == 0.5  # --tolerance wins


@pytest.mark.parametrize(("metric", "compared"), [
    ("epoch_seconds", False), ("images_per_second", False), ("epoch", False), ("test_acc", True)])
def test_reproduce_never_compares_timings(metric, compared):
    from auxcli.bundle.reproduce import _uncompared

    assert _uncompared(metric) is not compared
