"""Every YAML file the package reads goes through `auxcli.safeyaml` (issue 21): resolved specs in run
folders, `dvc.lock` and `.dvc` files, the superclass mapping, bundle builders and spec bases. A 1 KB alias
bomb, a FIFO or a device is named and skipped or refused, in seconds and without growing memory."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import auxcli
from auxcli.cli import app
from tests.conftest import SPECIAL_FILE_KINDS, make_special_file

BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
        "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n")
LOADS = re.compile(r"YAML\([^)]*\)\s*\.\s*(load|compose)\b|\byaml\s*\.\s*(load|safe_load|compose)\(|import yaml\b")


def test_no_yaml_is_loaded_outside_safeyaml():
    package = Path(auxcli.__file__).parent
    found = [f"{p.relative_to(package)}:{n}" for p in sorted(package.rglob("*.py")) if p.name != "safeyaml.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if LOADS.search(line)]
    assert found == []
    assert LOADS.search('doc = YAML(typ="safe", pure=True).load(text)')  # the pattern finds what it should


@pytest.mark.parametrize("content", [BOMB, "outs: !!python/object:os.system {}\n", "\x00\x01"])
def test_a_damaged_dvc_file_is_skipped_with_its_name(workdir, caplog, content):
    from auxcli.data.identity import dvc_tracked

    (workdir / ".dvc").mkdir()
    (workdir / "data").mkdir()
    (workdir / "data.dvc").write_text(content)
    (workdir / "dvc.lock").write_text(BOMB)
    with caplog.at_level(logging.WARNING):
        assert dvc_tracked(Path("data")) == (None, None)
    assert "data.dvc" in caplog.text and "dvc.lock" in caplog.text


def test_a_fifo_as_dvc_lock_is_not_read(workdir, time_limit):
    from auxcli.data.identity import dvc_tracked

    (workdir / ".dvc").mkdir()
    (workdir / "data").mkdir()
    os.mkfifo(workdir / "dvc.lock")
    os.mkfifo(workdir / "data.dvc")
    assert dvc_tracked(Path("data")) == (None, None)  # returns: a FIFO would block a reader for good


@pytest.mark.parametrize("kind", ["bomb", "fifo", "device", "folder", "tag"])
def test_a_hostile_superclass_mapping_is_refused_naming_it(workdir, kind, time_limit):
    from auxcli.data.folder import read_superclasses
    from auxcli.errors import DataError

    path = workdir / "map.yaml"
    if kind == "bomb":
        path.write_text(BOMB)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_text("cat: !!python/name:os.system\n")
    with pytest.raises(DataError, match="data.superclasses") as err:
        read_superclasses(path, ["cat"])
    assert str(path) in str(err.value)


@pytest.mark.parametrize("kind", SPECIAL_FILE_KINDS)
def test_validate_says_what_run_refuses_about_the_mapping(tiny_spec, workdir, kind, time_limit):
    path = workdir / "map.yaml"
    make_special_file(path, kind)
    spec = tiny_spec("mapped")
    spec.write_text(spec.read_text().replace("dataset: synthetic", "dataset: folder")
                    .replace("  synthetic: {train_per_class: 4, test_per_class: 2}\n", f"  superclasses: {path}\n"))
    result = CliRunner().invoke(app, ["validate", str(spec)])
    assert result.exit_code == 2, result.output
    assert "data.superclasses" in result.output and "not a regular file" in result.output


def test_report_without_a_store_skips_a_run_folder_with_a_bomb_for_a_spec(workdir, caplog):
    from auxcli.report.collect import RunFolders

    folder = workdir / "runs" / "x" / "seed-0"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text('{"spec_name": "x", "seed": 0, "final_test_acc": 0.5}')
    (folder / "spec.resolved.yaml").write_text(BOMB)
    with caplog.at_level(logging.WARNING):
        assert RunFolders([workdir / "runs"]).runs() == []
    assert str(folder) in caplog.text and "alias bomb" in caplog.text


def test_spec_sources_of_a_bomb_keeps_the_file_and_stops(workdir):
    from auxcli.runrecord import spec_sources

    (workdir / "spec.yaml").write_text(BOMB)
    assert spec_sources(workdir / "spec.yaml") == [workdir / "spec.yaml"]
