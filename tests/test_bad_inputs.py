"""The bad-input corpus of issue 9: one case (at least) per class of bad input, each through the real CLI.

Every case asserts the exit code (2 bad input, 1 runtime failure), that the message names the file and
the field or file at fault, and that no traceback is printed. Cases run in-process through CliRunner;
none trains more than a 1-epoch depth-8 network.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.data.synthetic import ARCHIVE_FOLDER, MANIFEST, synthesize_cifar100, synthetic_folder

runner = CliRunner()

TINY = """\
name: tiny
data: {{dataset: synthetic, root: {root}, synthetic: {{train_per_class: 1, test_per_class: 1}}}}
model: {{backbone: resnet, depth: 8, base_width: 4}}
train: {{epochs: 1, batch_size: 64, milestones: [], eval_batch_size: 200}}
runtime: {{threads: 1}}
"""


def invoke(args: list[str]):
    return runner.invoke(app, args)


def check(result, code: int, *needles: str) -> None:
    out = result.output
    assert result.exit_code == code, out
    assert "Traceback" not in out, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for needle in needles:
        assert needle in out, f"{needle!r} not in {out!r}"


def tiny(workdir: Path, extra: str = "", name: str = "tiny.yaml") -> Path:
    path = workdir / name
    path.write_text(TINY.format(root=(workdir / "data").as_posix()) + extra)
    return path


# ---------------------------------------------------------------------------------------------- spec files

BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)) + "name: x\n"

SPEC_FILE_CASES: dict[str, tuple[bytes, str, tuple[str, ...]]] = {
    # id: (file bytes, command, needles besides the file name)
    "non_utf8": (b"name: caf\xe9\n", "validate", ("not UTF-8", ":1:")),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "validate", ("not UTF-8",)),
    "binary_ascii": (b"\x00\x01\x02\x03", "validate", ("control character",)),
    "control_character": (b"name: a\x07b\n", "validate", ("U+0007", ":1:")),
    "nul_byte": (b"name: x\nseeds: [0]\x00\n", "validate", ("U+0000", ":2:")),
    "merge_key": (b"base: &b {epochs: 1}\ntrain:\n  <<: *b\nname: x\n", "validate", ("merge keys", ":3:")),
    "python_tag": (b"name: !!python/object/apply:os.system [echo hi]\n", "validate", ("tag",)),
    "custom_tag": (b"name: !secret x\n", "validate", ("tag !secret",)),
    "binary_tag": (b"name: !!binary aGk=\n", "validate", ("tag",)),
    "recursive_alias": (b"name: x\nseeds: &s [0, *s]\n", "validate", ("recursive",)),
    "alias_bomb": (BILLION_LAUGHS.encode(), "validate", ("alias bomb",)),
    "deep_nesting": (b"name: x\ntrain: " + b"[" * 400 + b"]" * 400 + b"\n", "validate", ("nests deeper",)),
    "deep_mapping": (b"name: x\nx: " + b"{a: " * 60 + b"1" + b"}" * 60 + b"\n", "validate", ("nests deeper",)),
    "two_documents": (b"name: x\n---\nname: y\n", "validate", ("invalid YAML",)),
    "not_a_mapping": (b"- name: x\n", "validate", ("must be a mapping",)),
    "too_large": (b"name: x\n" + b"#" * (1 << 20) + b"\n", "validate", ("at most",)),
    "huge_seed": (b"name: x\nseeds: [100000000000000000000000000000]\n", "validate", ("seeds.0", "<= 4294967295")),
    "negative_seed": (b"name: x\nseeds: [-1]\n", "validate", ("seeds.0", ">= 0")),
    "inf_alpha": (b"name: x\nmodel: {backbone: pyramidnet, depth: 8, alpha: .inf}\n", "validate",
                  ("model.alpha", "finite")),
    "nan_lr": (b"name: x\ntrain: {lr: .nan}\n", "validate", ("train.lr", "finite")),
    "huge_threads": (b"name: x\nruntime: {threads: 1000000000000}\n", "validate", ("runtime.threads", "1024")),
    "huge_base_width": (b"name: x\nmodel: {base_width: 100000}\n", "validate", ("model.base_width", "1024")),
    "bool_as_int": (b"name: x\ntrain: {epochs: true}\n", "validate", ("train.epochs", "an integer")),
    "string_as_number": (b"name: x\ntrain: {lr: '0.1'}\n", "validate", ("train.lr", "a number")),
    "date_as_number": (b"name: x\ntrain: {lr: 2024-01-01}\n", "validate", ("train.lr",)),
    "experiment_path": (b"name: x\ntracking: {experiment: ../../elsewhere}\n", "validate",
                        ("tracking.experiment", "file-system-safe")),
    "experiment_absolute": (b"name: x\ntracking: {experiment: /tmp/x}\n", "validate", ("tracking.experiment",)),
    "name_path": (b"name: ../x\n", "validate", ("name",)),
    "escaped_nul_in_path": (b'name: x\ndata: {root: "da\\0ta"}\n', "validate", ("data.root", "control character")),
}


@pytest.mark.parametrize("case", SPEC_FILE_CASES)
def test_bad_spec_file_is_a_clean_error(workdir, case):
    content, command, needles = SPEC_FILE_CASES[case]
    (workdir / "bad.yaml").write_bytes(content)
    check(invoke([command, "bad.yaml"]), 2, "bad.yaml", *needles)


def test_alias_bomb_is_refused_quickly(workdir):
    import time

    (workdir / "bomb.yaml").write_text(BILLION_LAUGHS)
    started = time.perf_counter()
    check(invoke(["validate", "bomb.yaml"]), 2, "bomb.yaml", "alias bomb")
    assert time.perf_counter() - started < 5


def test_fifo_as_spec_does_not_hang(workdir):
    os.mkfifo(workdir / "pipe.yaml")
    check(invoke(["validate", str(workdir / "pipe.yaml")]), 2, "pipe.yaml", "not a regular file")


def test_bad_extends_base_is_named(workdir):
    (workdir / "_base.yaml").write_bytes(b"train: {lr: \xff}\n")
    (workdir / "s.yaml").write_text("extends: _base.yaml\nname: s\n")
    check(invoke(["validate", "s.yaml"]), 2, "_base.yaml", "not UTF-8")


# ---------------------------------------------------------------------------------------------- --set, --params

SET_CASES: dict[str, tuple[str, tuple[str, ...]]] = {
    "empty_key": ("=1", ("malformed override",)),
    "empty_part": ("train..lr=1", ("malformed override",)),
    "no_value": ("train.lr", ("malformed override",)),
    "bad_yaml": ("train.lr=[1", ("train.lr", "not valid YAML")),
    "tagged_value": ("train.lr=!!python/name:os.system", ("train.lr", "tag")),
    "alias_bomb_value": ("train.lr=" + "[&a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(
        f"&{c} [{', '.join(['*' + p] * 10)}]" for p, c in zip("abcdefg", "bcdefgh")) + "]", ("alias bomb",)),
    "control_character": ("name=a\x1bb", ("U+001B",)),
    "bool_epochs": ("train.epochs=true", ("train.epochs", "an integer")),
    "inf_weight_decay": ("train.weight_decay=.inf", ("train.weight_decay", "finite")),
    "deep_key": (".".join(["a"] * 40) + "=1", ("nested deeper",)),
}


@pytest.mark.parametrize("case", SET_CASES)
def test_bad_set_is_a_clean_error(workdir, case):
    text, needles = SET_CASES[case]
    tiny(workdir)
    check(invoke(["validate", "tiny.yaml", "--set", text]), 2, "tiny.yaml", *needles)


PARAMS_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "directory": (lambda d: (d / "pdir").mkdir() or d / "pdir", ("pdir", "is a folder")),
    "missing": (lambda d: d / "nope.yaml", ("nope.yaml", "no such file (params file)")),
    "non_utf8": (lambda d: (d / "p.yaml").write_bytes(b"train: {lr: \xff}\n") and d / "p.yaml",
                 ("p.yaml", "not UTF-8")),
    "date_value": (lambda d: (d / "p.yaml").write_text("train:\n  lr: 2024-01-01\n") and d / "p.yaml",
                   ("train.lr", "a number")),
    "date_document": (lambda d: (d / "p.yaml").write_text("2024-01-01\n") and d / "p.yaml",
                      ("p.yaml", "must be a mapping")),
    "merge_key": (lambda d: (d / "p.yaml").write_text("a: &a {lr: 1}\ntrain: {<<: *a}\n") and d / "p.yaml",
                  ("p.yaml", "merge keys")),
}


@pytest.mark.parametrize("case", PARAMS_CASES)
def test_bad_params_file_is_a_clean_error(workdir, case):
    make, needles = PARAMS_CASES[case]
    params = make(workdir)
    tiny(workdir)
    check(invoke(["run", "tiny.yaml", "--params", str(params)]), 2, *needles)


def test_fifo_as_params_does_not_hang(workdir):
    os.mkfifo(workdir / "p.yaml")
    tiny(workdir)
    check(invoke(["run", "tiny.yaml", "--params", "p.yaml"]), 2, "p.yaml", "not a regular file")


def test_empty_mapping_in_params_or_set_changes_nothing(workdir):
    from auxcli.specfile import load_spec, params_overrides

    spec_file = tiny(workdir)
    (workdir / "p.yaml").write_text("train: {}\naugment: {}\n")
    overrides = params_overrides(workdir / "p.yaml")
    for applied in (overrides, ["train={}"], ["train={}", "augment={crop: {}}"]):
        spec = load_spec(spec_file, applied)
        assert spec.train.epochs == 1 and spec.train.batch_size == 64, applied
        assert spec.augment.crop is not None and spec.augment.crop.padding == 4


def test_a_mapping_merges_and_delete_then_set_replaces(workdir):
    from auxcli.specfile import load_spec

    spec_file = tiny(workdir)
    merged = load_spec(spec_file, ["train={lr: 0.05}"])
    assert (merged.train.lr, merged.train.epochs) == (0.05, 1)
    replaced = load_spec(spec_file, ["~train", "train={lr: 0.05}"])
    assert (replaced.train.lr, replaced.train.epochs, replaced.train.batch_size) == (0.05, 300, 128)


def test_params_file_with_special_floats_round_trips(workdir):
    from auxcli.specfile import params_overrides

    (workdir / "p.yaml").write_text("train: {lr: .inf, milestones: [1, 2]}\n")
    assert params_overrides(workdir / "p.yaml") == ["train.lr=.inf", "train.milestones=[1, 2]"]


# ---------------------------------------------------------------------------------------------- options

def test_negative_seed_option(workdir):
    tiny(workdir)
    check(invoke(["run", "tiny.yaml", "--seed", "-1"]), 2, "--seed")


def test_huge_seed_option(workdir):
    tiny(workdir)
    check(invoke(["run", "tiny.yaml", "--seed", str(10**29)]), 2, "--seed")


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_bench_steps_must_be_positive(workdir, steps):
    tiny(workdir)
    check(invoke(["bench", "tiny.yaml", "--steps", steps]), 2, "--steps")


@pytest.mark.parametrize("device", ["cuda", "cuda:3", "mps"])
def test_missing_device_is_refused_before_anything_runs(workdir, device):
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > int(device.partition(":")[2] or 0):
        pytest.skip("this machine has that CUDA device")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    spec = tiny(workdir)
    spec.write_text(spec.read_text().replace("runtime: {threads: 1}", f"runtime: {{threads: 1, device: '{device}'}}"))
    check(invoke(["run", "tiny.yaml"]), 2, "tiny.yaml", "runtime.device", device)
    assert not (workdir / "data").exists() and not (workdir / "runs").exists()


# ---------------------------------------------------------------------------------------------- tracking stores

@pytest.mark.parametrize(("uri", "needles"), [
    ("foo://host/x", ("foo://", "unknown scheme")),
    ("postgresql://user@localhost/db", ("postgresql", "not installed")),
    ("mysql+pymysql://user@localhost/db", ("pymysql", "not installed")),
    ("sqlite:////nonexistent-folder/x.db", ("/nonexistent-folder", "does not exist")),
])
def test_bad_tracking_uri_is_refused_before_training(workdir, uri, needles):
    tiny(workdir, f"tracking: {{uri: '{uri}'}}\n")
    check(invoke(["run", "tiny.yaml"]), 2, *needles)
    assert not (workdir / "runs").exists()


def test_garbage_mlflow_db_is_named(workdir):
    (workdir / "mlflow.db").write_bytes(b"this is not a database" * 100)
    tiny(workdir)
    check(invoke(["run", "tiny.yaml"]), 2, "mlflow.db", "not an SQLite database")
    check(invoke(["report"]), 2, "mlflow.db")


def test_truncated_mlflow_db_is_named(workdir):
    from auxcli.tracking import RunTracker

    RunTracker(None, "auxcli")  # creates a real store
    db = workdir / "mlflow.db"
    db.write_bytes(db.read_bytes()[:6000])
    tiny(workdir)
    check(invoke(["run", "tiny.yaml"]), 2, "mlflow.db")


@pytest.mark.real_store_migrations  # the full disk strikes in the migrations' CREATE INDEX
def test_store_creation_failure_leaves_no_broken_store(workdir, monkeypatch):
    """A full disk while the schema is created: the error names the store, and no mlflow.db is left."""
    import sqlalchemy

    real = sqlalchemy.engine.base.Connection.execute

    def full_disk(self, *args, **kwargs):
        if "CREATE INDEX" in str(args[0]):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    tiny(workdir)
    with monkeypatch.context() as patch:
        patch.setattr(sqlalchemy.engine.base.Connection, "execute", full_disk)
        check(invoke(["run", "tiny.yaml"]), 2, "mlflow.db")
    assert not (workdir / "mlflow.db").exists()
    assert not list(workdir.glob(".mlflow.db.init-*"))
    from auxcli.tracking import RunTracker

    assert RunTracker(None, "auxcli").experiment_id  # the next attempt creates it whole


# ---------------------------------------------------------------------------------------------- writes

def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_schema_out_into_a_file_path(workdir):
    (workdir / "afile").write_text("x")
    check(invoke(["schema", "--out", "afile/schema.json"]), 2, "afile/schema.json")


def test_schema_out_on_a_full_disk(workdir, monkeypatch):
    monkeypatch.setattr("auxcli.runfolder.os.fsync", _full_disk)
    check(invoke(["schema", "--out", "schema.json"]), 1, "schema.json", "ENOSPC")
    assert not list(workdir.iterdir())  # no temporary file left


def test_pipeline_on_a_full_disk(workdir, monkeypatch):
    tiny(workdir)
    monkeypatch.setattr("auxcli.runfolder.os.fsync", _full_disk)
    check(invoke(["pipeline", "tiny.yaml"]), 1, "dvc.yaml", "ENOSPC")


def test_data_synth_into_a_file_path(workdir):
    (workdir / "afile").write_text("x")
    check(invoke(["data", "synth", "--root", "afile/data"]), 2, "afile", "ENOTDIR")


def test_data_synth_on_a_full_disk(workdir, monkeypatch):
    monkeypatch.setattr("auxcli.data.synthetic.Path.write_bytes", _full_disk)
    check(invoke(["data", "synth", "--root", "d"]), 1, "cifar-100-python", "ENOSPC")
    assert not (workdir / "d" / ARCHIVE_FOLDER).exists()
    assert not list((workdir / "d").glob(".synthesize-*"))


def test_checkpoint_write_on_a_full_disk_is_named_and_the_run_fails_cleanly(workdir, monkeypatch):
    tiny(workdir)
    monkeypatch.setattr("auxcli.train.checkpoint.torch.save", _full_disk)
    check(invoke(["run", "tiny.yaml"]), 1, "last.pt", "ENOSPC")
    assert not list((workdir / "runs" / "tiny" / "seed-0").glob(".*.tmp"))


def test_unexpected_error_hides_the_traceback_unless_debug(workdir, monkeypatch):
    def boom(*args, **kwargs):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("auxcli.schema.spec_json_schema", boom)
    check(invoke(["schema"]), 1, "ZeroDivisionError", "--debug")
    result = invoke(["--debug", "schema"])
    assert isinstance(result.exception, ZeroDivisionError)


# ---------------------------------------------------------------------------------------------- data

def _archive(workdir: Path) -> Path:
    root = synthetic_folder(workdir / "data", train_per_class=1, test_per_class=1, seed=0)
    synthesize_cifar100(root, train_per_class=1, test_per_class=1, seed=0)
    return root / ARCHIVE_FOLDER


def _rewrite(folder: Path, name: str, change: Callable[[dict], object]) -> None:
    """Change one pickle of the archive and re-sign it in the manifest, as a tamperer would."""
    with open(folder / name, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    replaced = change(entry)
    payload = pickle.dumps(replaced if isinstance(replaced, dict | list) else entry, protocol=4)
    (folder / name).write_bytes(payload)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"][name]["md5"] = hashlib.md5(payload).hexdigest()
    (folder / MANIFEST).write_text(json.dumps(manifest))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


DATA_CASES: dict[str, tuple[str, Callable[[dict], object], tuple[str, ...]]] = {
    "label_out_of_range": ("train", lambda e: e["fine_labels"].__setitem__(0, 100), ("train", "fine_labels", "0..99")),
    "negative_label": ("test", lambda e: e["fine_labels"].__setitem__(3, -1), ("test", "fine_labels", "-1")),
    "coarse_out_of_range": ("train", lambda e: e["coarse_labels"].__setitem__(0, 20), ("coarse_labels", "0..19")),
    "count_mismatch": ("train", lambda e: e["fine_labels"].pop(), ("train", "99 labels for 100 images")),
    "wrong_shape": ("train", lambda e: e.update(data=np.zeros((100, 1000), np.uint8)), ("train", "shape (100, 1000)")),
    "wrong_dtype": ("test", lambda e: e.update(data=e["data"].astype(np.float32)), ("test", "float32", "uint8")),
    "empty_split": ("test", lambda e: e.update(data=np.zeros((0, 3072), np.uint8), fine_labels=[], coarse_labels=[]),
                    ("test split", "no images")),
    "too_few_class_names": ("meta", lambda e: e["fine_label_names"].pop(), ("meta", "99 names")),
    "not_a_mapping": ("train", lambda e: [1, 2, 3], ("train", "list")),
    "labels_not_integers": ("train", lambda e: e.update(fine_labels=["a"] * 100), ("train", "not integers")),
    "code_in_pickle": ("train", lambda e: {"data": _Exploit()}, ("train", "posix.system", "was not loaded")),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_wrong_data_behind_a_valid_checksum_is_refused_by_verify_and_run(workdir, case):
    file, change, needles = DATA_CASES[case]
    folder = _archive(workdir)
    _rewrite(folder, file, change)
    verify = invoke(["data", "verify", "--root", str(folder.parent)])
    check(verify, 2, str(folder), *needles)
    tiny(workdir)
    run = invoke(["run", "tiny.yaml"])
    check(run, 2, str(folder), *needles)
    assert "epoch" not in run.output  # refused before training
    assert not (workdir / "PWNED").exists()


def test_restricted_unpickler_reads_plain_numpy_pickles(workdir):
    from auxcli.data.archive import safe_load_pickle

    entry = {"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "labels": [1, 2], "name": b"x"}
    (workdir / "p").write_bytes(pickle.dumps(entry, protocol=2))
    loaded = safe_load_pickle(workdir / "p")
    assert np.array_equal(loaded["data"], entry["data"]) and loaded["labels"] == [1, 2]


# ---------------------------------------------------------------------------------------------- checkpoints

def _torch_save(path: Path, state: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def test_crafted_last_pt_missing_keys(workdir):
    tiny(workdir)
    _torch_save(workdir / "runs/tiny/seed-0/last.pt", {"format": "auxcli-last-1", "epoch": 1})
    check(invoke(["run", "tiny.yaml"]), 2, "last.pt", "model (missing)")


def test_crafted_final_pt_missing_keys_as_transfer_source(workdir):
    tiny(workdir, "transfer: {from: src.pt, mode: linear}\n")
    _torch_save(workdir / "src.pt", {"format": "auxcli-final-1", "backbone": {}})
    check(invoke(["run", "tiny.yaml"]), 2, "src.pt", "spec (missing)")


def test_truncated_last_pt(workdir):
    tiny(workdir)
    _torch_save(workdir / "runs/tiny/seed-0/last.pt", {"format": "auxcli-last-1"})
    path = workdir / "runs/tiny/seed-0/last.pt"
    path.write_bytes(path.read_bytes()[:50])
    check(invoke(["run", "tiny.yaml"]), 2, "last.pt", "cannot read")


def test_read_only_mlflow_db_is_named(workdir, monkeypatch):
    from auxcli.tracking import RunTracker

    RunTracker(None, "auxcli")
    db = str(workdir / "mlflow.db")
    real = os.access
    monkeypatch.setattr("auxcli.tracking.os.access", lambda p, mode: False if str(p) == db else real(p, mode))
    tiny(workdir)
    check(invoke(["run", "tiny.yaml"]), 2, "mlflow.db", "read-only")


def test_metrics_json_on_a_full_disk_fails_cleanly_and_a_rerun_finishes(workdir, monkeypatch):
    real = os.replace

    def replace(src, dst):
        if str(dst).endswith("metrics.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    tiny(workdir)
    with monkeypatch.context() as patch:
        patch.setattr("auxcli.runfolder.os.replace", replace)
        check(invoke(["run", "tiny.yaml"]), 1, "metrics.json", "ENOSPC")
    folder = workdir / "runs" / "tiny" / "seed-0"
    assert not (folder / "metrics.json").exists() and not list(folder.glob(".*.tmp"))
    rerun = invoke(["run", "tiny.yaml"])
    check(rerun, 0)
    assert "epoch 1/1" not in rerun.output  # resumed after the last epoch: nothing retrained
    assert (folder / "complete.json").exists()


def test_too_long_runs_dir_is_named(workdir):
    tiny(workdir)
    check(invoke(["run", "tiny.yaml", "--set", f"runtime.runs_dir={'r' * 300}"]), 2, "r" * 300, "cannot be written")


def test_report_out_into_a_file_path(workdir):
    from auxcli.tracking import RunTracker

    tracker = RunTracker(None, "auxcli")
    tracker.start("x-s0", {"auxcli.spec_name": "x", "auxcli.seed": "0"}, {})
    tracker.log_metrics({"final_test_acc": 0.5}, 1)
    tracker.end("FINISHED")
    (workdir / "afile").write_text("x")
    check(invoke(["report", "--out", "afile/reports"]), 2, "afile/reports")


@pytest.mark.parametrize(("name", "code", "hint"), [("ENOSPC", 1, "free some space"), ("EROFS", 2, "read-only"),
                                                     ("EACCES", 2, "permissions"), ("ENAMETOOLONG", 2, "shorter"),
                                                     ("EIO", 1, "check that path")])
def test_os_errors_map_to_exit_codes_and_hints(name, code, hint):
    from auxcli.errors import describe_unexpected

    message, exit_code = describe_unexpected(OSError(getattr(errno, name), os.strerror(getattr(errno, name)),
                                                     "/some/path"))
    assert exit_code == code and "/some/path" in message and name in message and hint in message


@pytest.mark.parametrize("command", [["ui", "--tracking-uri"], ["report", "--tracking-uri"]])
def test_bad_store_uri_for_ui_and_report(workdir, command):
    check(invoke([*command, "foo://host/x"]), 2, "foo://", "unknown scheme")
