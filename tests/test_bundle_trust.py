"""Bundles are input from strangers (issue 21): a consistent manifest proves nothing, so `auxcli reproduce`
checks every field, replaces nothing, writes and reports only where this machine says, and extracts
within stated limits. One tiny run, trained once for the module, serves every hostile bundle."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auxcli.bundle.archive import MANIFEST, write_bundle
from auxcli.cli import app
from tests.conftest import project_folder, SPECIAL_FILE_KINDS, make_special_file

SPEC = """\
name: pre
seeds: [0]
data:
  dataset: synthetic
  root: data
  synthetic: {train_per_class: 4, test_per_class: 2}
model: {backbone: resnet, depth: 8, base_width: 4}
train: {epochs: 2, batch_size: 64, milestones: [1], eval_batch_size: 200}
runtime: {threads: 1}
"""


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    with project_folder(root) as mp:
        (root / "pre.yaml").write_text(SPEC)
        mp.setattr(sys, "argv", ["auxcli", "run", "pre.yaml"])
        assert invoke("run", "pre.yaml").exit_code == 0
        assert invoke("bundle", "runs/pre/seed-0", "-o", "good.tar.gz").exit_code == 0
    return root


@pytest.fixture
def at(project, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return project


def members(bundle: Path) -> tuple[dict[str, bytes], list[dict]]:
    with tarfile.open(bundle, "r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    return files, json.loads(files.pop(MANIFEST))["runs"]


def forged(at: Path, name: str, edit) -> Path:
    """A bundle with a consistent manifest whose files and run entries `edit(files, runs)` changed."""
    files, runs = members(at / "good.tar.gz")
    edit(files, runs)
    write_bundle(at / name, files, runs)
    return at / name


def refused(result, *words) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "unexpected" not in result.output
    for word in words:
        assert word in result.output, result.output


def _rename(files, runs, to="other"):
    """Move the run's members to runs/<to>/seed-0 and list it so; its spec still names `pre`."""
    for key in list(files):
        if key.startswith("runs/pre/"):
            files[key.replace("runs/pre/", f"runs/{to}/")] = files.pop(key)
    runs[0].update(name=to, path=f"runs/{to}/seed-0")


def test_manifest_naming_another_run_than_its_spec_is_refused_and_nothing_replaced(at):
    bundle = forged(at, "renamed.tar.gz", _rename)
    before = {p: p.read_bytes() for p in (at / "runs" / "pre" / "seed-0").rglob("*") if p.is_file()}
    for args in (["--check-only"], ["--runs-dir", "runs"], ["--runs-dir", "fresh"]):
        refused(invoke("reproduce", bundle, *args), "names spec 'pre'", "disagree")
    assert {p: p.read_bytes() for p in before} == before
    assert not (at / "fresh").exists() and not (at / "runs" / "_bundle").exists()


@pytest.mark.parametrize("field, value, problem", [
    ("seed", "0", "plain integer"), ("seed", True, "plain integer"), ("seed", 0.0, "plain integer"),
    ("seed", -1, "plain integer"), ("name", "../pre", "not a spec name"), ("name", "a/b", "not a spec name"),
    ("path", "runs/pre/seed-1", "does not match"), ("role", "owner", "role"),
    ("transfer_source", "runs/elsewhere/seed-0", "not another run"), ("weights", "yes", "true or false"),
])
def test_every_manifest_field_is_checked_before_anything_is_written(at, field, value, problem):
    bundle = forged(at, f"field-{field}.tar.gz", lambda files, runs: runs[0].update({field: value}))
    for args in (["--check-only"], ["--runs-dir", "never"]):
        refused(invoke("reproduce", bundle, *args), problem, "runs[0]")
    assert not (at / "never").exists()


def test_a_bundle_without_runs_or_with_a_run_twice_is_an_error(at):
    empty = forged(at, "empty.tar.gz", lambda files, runs: runs.clear())
    refused(invoke("reproduce", empty, "--check-only"), "no runs")
    twice = forged(at, "twice.tar.gz", lambda files, runs: runs.append(dict(runs[0])))
    refused(invoke("reproduce", twice, "--check-only"), "listed twice")


def test_a_bundled_spec_with_extends_or_a_yaml_bomb_is_refused(at):
    def extends(files, runs):
        files["runs/pre/seed-0/spec.resolved.yaml"] += b"extends: /etc/passwd\n"

    def bomb(files, runs):
        files["runs/pre/seed-0/spec.resolved.yaml"] = (
            b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            b"e: [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nname: pre\n")

    refused(invoke("reproduce", forged(at, "extends.tar.gz", extends), "--check-only"), "extends")
    refused(invoke("reproduce", forged(at, "bomb.tar.gz", bomb), "--check-only"), "alias bomb")


def test_extracted_size_and_compression_ratio_are_capped(at, monkeypatch):
    from auxcli.bundle import trust

    refused(invoke("reproduce", at / "good.tar.gz", "--check-only", "--max-extracted-gib", "0.000001"),
            "over the limit", "--max-extracted-gib")
    zeros = forged(at, "zeros.tar.gz", lambda files, runs: files.update({"runs/pre/seed-0/repro/pad": bytes(4 << 20)}))
    monkeypatch.setattr(trust, "RATIO_FLOOR_BYTES", 1 << 20)  # a 4 MiB stand-in for a GiB-sized bomb
    refused(invoke("reproduce", zeros, "--check-only"), "times its size", "--max-compression-ratio")
    ok = invoke("reproduce", zeros, "--check-only", "--max-compression-ratio", "100000")
    assert ok.exit_code == 0, ok.output


def test_bundled_data_root_and_tracking_uri_are_reported_never_obeyed(at, tmp_path):
    elsewhere = tmp_path / "bundle-chose-this"

    def relocate(files, runs):
        text = files["runs/pre/seed-0/spec.resolved.yaml"].decode()
        text = text.replace("root: data", f"root: {elsewhere.as_posix()}")
        assert "uri: null" in text
        files["runs/pre/seed-0/spec.resolved.yaml"] = text.replace("uri: null", "uri: http://127.0.0.1:9/").encode()

    bundle = forged(at, "relocated.tar.gz", relocate)
    result = invoke("reproduce", bundle, "--epochs", "1", "--runs-dir", "rd-relocated")
    assert result.exit_code == 0, result.output
    assert "bundled tracking.uri http://127.0.0.1:9/ not used" in result.output
    assert f"bundled data.root {elsewhere.as_posix()} not used" in result.output
    assert not elsewhere.exists()
    from mlflow.tracking import MlflowClient

    store = MlflowClient(tracking_uri=f"sqlite:///{at / 'mlflow.db'}")
    assert store.get_experiment_by_name("auxcli-reproduce") is not None  # the user's own store


# ---------------------------------------------------------------------------------------------- building

@pytest.fixture
def copy_of_run(at, tmp_path):
    import shutil

    folder = tmp_path / "copy" / "seed-0"
    shutil.copytree(at / "runs" / "pre" / "seed-0", folder, symlinks=True)
    return folder


@pytest.mark.parametrize("plant", ["repro-file", "repro-folder", "history"])
def test_bundling_refuses_a_link_out_of_the_run_folder(at, copy_of_run, tmp_path, plant):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for strangers")
    if plant == "repro-file":
        (copy_of_run / "repro" / "notes.txt").symlink_to(secret)
    elif plant == "repro-folder":
        (copy_of_run / "repro" / "more").symlink_to(tmp_path, target_is_directory=True)
    else:
        (copy_of_run / "history.csv").unlink()
        (copy_of_run / "history.csv").symlink_to(secret)
    out = tmp_path / "linked.tar.gz"
    refused(invoke("bundle", copy_of_run, "-o", out), "symbolic link", "never follows a link")
    assert not out.exists()


def test_bundling_refuses_a_fifo_in_the_run_folder_without_hanging(at, copy_of_run, tmp_path, time_limit):
    import os

    os.mkfifo(copy_of_run / "repro" / "pipe")
    refused(invoke("bundle", copy_of_run, "-o", tmp_path / "fifo.tar.gz"), "not a regular file", "pipe")


@pytest.mark.parametrize("damage", ["<<<<<<< HEAD\n{}\n=======\n", "[1, 2]", ""])
def test_bundling_a_damaged_metrics_file_names_it(at, copy_of_run, tmp_path, damage):
    (copy_of_run / "metrics.json").write_text(damage)
    refused(invoke("bundle", copy_of_run, "-o", tmp_path / "damaged.tar.gz"), "metrics.json", "damaged")


def test_bundle_by_spec_name_from_a_subfolder_of_the_project(at, monkeypatch, tmp_path):
    (at / ".git").mkdir(exist_ok=True)  # the project root that anchors runs/
    (at / "sub").mkdir(exist_ok=True)
    monkeypatch.chdir(at / "sub")
    try:
        result = invoke("bundle", "pre", "-o", tmp_path / "by-name.tar.gz")
    finally:
        (at / ".git").rmdir()
    assert result.exit_code == 0, result.output
    assert "runs/pre/seed-0" in json.dumps(members(tmp_path / "by-name.tar.gz")[1])


def test_bundling_a_run_whose_spec_is_a_yaml_bomb_names_it(at, copy_of_run, tmp_path):
    (copy_of_run / "spec.resolved.yaml").write_text(
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n")
    refused(invoke("bundle", copy_of_run, "-o", tmp_path / "bomb.tar.gz"), "spec.resolved.yaml", "alias bomb")


@pytest.mark.parametrize("member, content", [
    ("environment.json", b"[1, 2]"), ("code.json", b"{not json"), ("data.json", b'{"files": [1]}'),
    ("data.json", None), ("environment.json", b'{"runtime": "cpu", "distributions": []}'),
])
def test_a_damaged_bundled_record_is_named(at, member, content, tmp_path):
    def edit(files, runs):
        key = f"runs/pre/seed-0/repro/{member}"
        if content is None:
            files.pop(key)
        else:
            files[key] = content

    bundle = forged(at, "record.tar.gz", edit)
    result = invoke("reproduce", bundle, "--epochs", "1", "--runs-dir", tmp_path / "rd")
    if member == "environment.json" and content and content.startswith(b"{"):
        assert result.exit_code == 0, result.output  # odd values are differences, not errors
        assert "environment runtime: recorded cpu" in result.output
    else:
        refused(result, f"repro/{member}")


def test_an_old_run_with_a_password_in_its_spec_is_not_bundled(at, copy_of_run, tmp_path):
    spec = copy_of_run / "spec.resolved.yaml"
    spec.write_text(spec.read_text().replace("uri: null", "uri: http://alice:hunter2-secret@127.0.0.1:9/"))
    out = tmp_path / "creds.tar.gz"
    result = invoke("bundle", copy_of_run, "--tracking-uri", f"sqlite:///{at / 'mlflow.db'}", "-o", out)
    refused(result, "password", "never carries credentials")
    assert "hunter2-secret" not in result.output and not out.exists()


def test_a_bundled_mapping_outside_the_project_is_refused(at, tmp_path):
    def outside(files, runs):
        text = files["runs/pre/seed-0/spec.resolved.yaml"].decode()
        assert "superclasses: null" in text
        files["runs/pre/seed-0/spec.resolved.yaml"] = text.replace("superclasses: null",
                                                                   "superclasses: /etc/passwd").encode()

    result = invoke("reproduce", forged(at, "mapping.tar.gz", outside), "--runs-dir", tmp_path / "rd")
    refused(result, "data.superclasses", "outside this project")
    assert not (tmp_path / "rd" / "_bundle").exists()  # the extraction is removed again


def _with_manifest(at: Path, name: str, edit) -> Path:
    """The good bundle's members under a manifest that `edit(manifest)` changed, its bundle_id recomputed."""
    import gzip
    import io

    from auxcli.bundle.archive import bundle_id

    files, _ = members(at / "good.tar.gz")
    with tarfile.open(at / "good.tar.gz", "r:gz") as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
    edit(manifest)
    manifest["bundle_id"] = bundle_id(manifest)
    with gzip.GzipFile(at / name, "wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as out:
        for member, data in [(MANIFEST, json.dumps(manifest).encode()), *sorted(files.items())]:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return at / name


@pytest.mark.parametrize("edit, problem", [
    (lambda m: m["members"]["REPORT.md"].update(size=True), "non-negative integer"),
    (lambda m: m["members"]["REPORT.md"].update(size=-1), "non-negative integer"),
    (lambda m: m["members"]["REPORT.md"].update(sha256="AB" * 32), "64 lowercase hex"),
    (lambda m: m["runs"][0].update(transfer_source=m["runs"][0]["path"]), "not another run"),
    (lambda m: m["members"]["runs/pre/seed-0/spec.resolved.yaml"].update(size=2 << 20), "is at most 1,048,576"),
], ids=["size-bool", "size-negative", "sha-upper", "transfer-self", "spec-too-big"])
def test_member_entries_of_the_manifest_are_checked(at, edit, problem):
    refused(invoke("reproduce", _with_manifest(at, "members.tar.gz", edit), "--check-only"), problem)


@pytest.mark.parametrize("kind", SPECIAL_FILE_KINDS)
def test_a_bundle_that_is_not_a_regular_file_is_refused_without_blocking(at, tmp_path, kind, time_limit):
    path = tmp_path / "bundle.tar.gz"
    make_special_file(path, kind)
    for args in (["--check-only"], ["--runs-dir", tmp_path / "rd"]):
        refused(invoke("reproduce", path, *args), "not a regular file")
