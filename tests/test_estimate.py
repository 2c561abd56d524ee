"""`auxcli plan --estimate`: a measured wall time for every run, the tables and the suite; cached per machine."""

from __future__ import annotations

import json
import re

from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.estimate import format_duration, group_of, split_sizes
from auxcli.spec import Spec

DURATION = r"\d+(\.\d)? (s|min|h)"


def test_plan_estimate_prints_a_time_for_every_run_and_reuses_the_cached_rate(workdir, tiny_spec):
    source = tiny_spec("table5-base")
    source.write_text(source.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    probe = tiny_spec("table2-probe", "transfer: {from: table5-base, mode: linear}\n")
    cache = workdir / "rates.json"
    partial = workdir / "runs" / "table5-base" / "seed-1"
    partial.mkdir(parents=True)
    (partial / "history.csv").write_text("epoch,train_loss\n1,4.6\n")  # one of two epochs done

    first = CliRunner().invoke(app, ["plan", str(source), str(probe), "--estimate", "--cache", str(cache)])
    assert first.exit_code == 0, first.output
    rows = {(m.group(1), m.group(2)): m.group(3) for m in re.finditer(
        rf"^(table\S+) +(\d) +\w+ +(\d+) +[\d,]+ +{DURATION}$", first.stdout, re.MULTILINE)}
    assert rows == {("table5-base", "0"): "2", ("table5-base", "1"): "1", ("table2-probe", "0"): "2"}
    assert re.search(rf"^Table 5: {DURATION}$", first.stdout, re.MULTILINE)
    assert re.search(rf"^Table 2: {DURATION}$", first.stdout, re.MULTILINE)
    assert re.search(rf"^whole suite \(3 runs, .*\): {DURATION}$", first.stdout, re.MULTILINE)
    assert first.stderr.count("measuring") == 1  # the probe trains its source's network: one measurement
    assert len(json.loads(cache.read_text())) == 1

    other_labels = tiny_spec("table1-superclass", "task: {labels: superclass}\n")
    again = CliRunner().invoke(app, ["plan", str(source), str(other_labels), "--estimate", "--cache", str(cache)])
    assert again.exit_code == 0 and "measuring" not in again.stderr  # the label set does not change the cost
    assert re.search(rf"^Table 1: {DURATION}$", again.stdout, re.MULTILINE)


def test_split_sizes_follow_the_data_section_without_loading_it():
    assert split_sizes(Spec(name="x")) == (50_000, 10_000)
    assert split_sizes(Spec.model_validate({"name": "x", "data": {"subset": 100}})) == (10_000, 10_000)
    synthetic = {"dataset": "synthetic", "synthetic": {"train_per_class": 20, "test_per_class": 5}}
    assert split_sizes(Spec.model_validate({"name": "x", "data": synthetic})) == (2_000, 500)


def test_durations_and_groups_read_like_the_study():
    assert [format_duration(s) for s in (42, 150, 4.1 * 3600)] == ["42 s", "2.5 min", "4.1 h"]
    assert group_of("table5-ricap-aux") == "Table 5" and group_of("mini-table2-probe-init") == "Table 2"
    assert group_of("my-experiment") == "my-experiment"


def test_split_sizes_of_an_image_folder_count_its_files(workdir):
    from PIL import Image

    for split, per_class in (("train", 3), ("test", 1)):
        for cls in ("cat", "dog"):
            folder = workdir / "pets" / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    data = {"dataset": "folder", "root": str(workdir / "pets")}
    assert split_sizes(Spec.model_validate({"name": "x", "data": data})) == (6, 2)
    assert split_sizes(Spec.model_validate({"name": "x", "data": {**data, "subset": 2}})) == (4, 2)
