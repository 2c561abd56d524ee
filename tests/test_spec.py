"""Specs: the committed spec files, error messages with locations, `extends`, `--set` and the schema.

Fast and torch-free: everything goes through `auxcli.specfile` or `auxcli validate` / `auxcli schema`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.errors import SpecError
from auxcli.schema import spec_json_schema
from auxcli.specfile import dump_spec, load_spec, spec_files

SPECS = Path(__file__).resolve().parents[1] / "specs"
PAPER = SPECS / "paper"
MINI = SPECS / "mini"
runner = CliRunner()

# The study's rows (docs/study.md, Tables 1-5): what each paper spec must say.
PYRAMIDNET = {"backbone": "pyramidnet", "depth": 110, "alpha": 270}
RESNET = {"backbone": "resnet", "depth": 110, "alpha": None}
LINEAR = {"backbone": "linear", "depth": None, "alpha": None}


def _row(model: dict, labels: str = "gt", aux: str | None = None, transfer: tuple | None = None) -> dict:
    return {"model": model, "labels": labels, "aux": aux, "transfer": transfer}


PAPER_ROWS = {
    "table1-gt": _row(PYRAMIDNET),
    "table1-superclass": _row(PYRAMIDNET, labels="superclass"),
    "table1-random": _row(PYRAMIDNET, labels="random"),
    "table2-probe-superclass": _row(PYRAMIDNET, transfer=("table1-superclass", "linear")),
    "table2-probe-random": _row(PYRAMIDNET, transfer=("table1-random", "linear")),
    "table2-linear-pixels": _row(LINEAR),
    "table2-probe-init": _row(PYRAMIDNET, transfer=("init", "linear")),
    "table3-finetune-gt": _row(PYRAMIDNET, transfer=("table1-gt", "finetune")),
    "table3-finetune-superclass": _row(PYRAMIDNET, transfer=("table1-superclass", "finetune")),
    "table3-finetune-random": _row(PYRAMIDNET, transfer=("table1-random", "finetune")),
    "table4-crop": _row(RESNET, labels="none", aux="crop"),
    "table4-cutout": _row(RESNET, labels="none", aux="cutout"),
    "table4-ricap": _row(RESNET, labels="none", aux="ricap"),
    **{f"table5-{aug}-{variant}": _row(RESNET, aux=aug if variant == "aux" else None)
       for aug in ("crop", "cutout", "ricap") for variant in ("base", "aux")},
}


def _validate(*args: str):
    return runner.invoke(app, ["validate", *args])


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------ committed specs

def test_every_committed_spec_validates():
    result = _validate(str(SPECS))
    assert result.exit_code == 0, result.output
    expected = [f for f in SPECS.rglob("*.yaml") if not f.name.startswith("_")]
    assert result.output.count("ok ") == len(expected) == 19 + 19 + 1 + 6  # paper, mini, smoke, beyond


def test_paper_specs_are_exactly_the_study_rows():
    assert sorted(f.stem for f in PAPER.glob("*.yaml")) == sorted(PAPER_ROWS)
    assert all(load_spec(f).name == f.stem for f in PAPER.glob("*.yaml"))


@pytest.mark.parametrize("stem", sorted(PAPER_ROWS))
def test_paper_spec_follows_the_study(stem):
    spec = load_spec(PAPER / f"{stem}.yaml")
    row = PAPER_ROWS[stem]
    assert spec.model.model_dump(include={"backbone", "depth", "alpha"}) == row["model"]
    assert spec.task.labels == row["labels"]
    assert (spec.task.aux.kind if spec.task.aux else None) == row["aux"]
    if spec.task.aux is not None:
        assert spec.task.aux.weight == 1.0
    assert ((spec.transfer.from_, spec.transfer.mode) if spec.transfer else None) == row["transfer"]
    # The training recipe of every experiment in the study.
    train = spec.train
    assert (train.epochs, train.batch_size, train.lr, train.momentum, train.nesterov) == (300, 128, 0.1, 0.9, True)
    assert (train.weight_decay, train.milestones, train.gamma) == (1e-4, [150, 225], 0.1)
    assert spec.augment.crop is not None and spec.augment.crop.padding == 4 and spec.augment.flip
    assert (spec.data.dataset, spec.data.root, spec.data.download) == ("cifar100", "data", True)
    assert spec.seeds == ([0, 1, 2, 3] if stem.startswith("table5") else [0])
    aug = stem.split("-")[1] if stem.startswith(("table4", "table5")) else None
    assert (spec.augment.cutout.size if spec.augment.cutout else None) == (16 if aug == "cutout" else None)
    assert (spec.augment.ricap.beta if spec.augment.ricap else None) == (0.3 if aug == "ricap" else None)
    if spec.augment.ricap:
        assert not spec.augment.ricap.keep_off_edges  # the study's Table 4 lets the boundary touch the edges


@pytest.mark.parametrize("stem", sorted(PAPER_ROWS))
def test_mini_spec_mirrors_its_paper_row(stem):
    paper, mini = load_spec(PAPER / f"{stem}.yaml"), load_spec(MINI / f"mini-{stem}.yaml")
    assert mini.name == f"mini-{stem}"
    assert "extends: _base.yaml" in (MINI / f"mini-{stem}.yaml").read_text()
    assert mini.model.backbone == paper.model.backbone
    assert mini.model.depth == (None if paper.model.backbone == "linear" else 8)
    assert mini.model.alpha == (12 if paper.model.backbone == "pyramidnet" else None)
    assert mini.task == paper.task
    assert (mini.augment.cutout, mini.augment.ricap) == (paper.augment.cutout, paper.augment.ricap)
    if paper.transfer is None:
        assert mini.transfer is None
    else:
        source = paper.transfer.from_
        assert mini.transfer.from_ == (source if source == "init" else f"mini-{source}")
        assert mini.transfer.mode == paper.transfer.mode
    assert mini.seeds == ([0, 1] if stem.startswith("table5") else [0])
    assert mini.data.dataset == "synthetic"
    assert (mini.data.synthetic.train_per_class, mini.data.synthetic.test_per_class) == (20, 5)
    assert (mini.train.epochs, mini.train.batch_size, mini.train.milestones) == (3, 64, [2])


def test_mini_folder_holds_only_the_suite_and_its_base():
    assert sorted(f.name for f in MINI.iterdir()) == sorted(
        ["_base.yaml"] + [f"mini-{stem}.yaml" for stem in PAPER_ROWS])


def test_smoke_spec_is_small():
    spec = load_spec(SPECS / "smoke.yaml")
    assert spec.name == "smoke" and spec.seeds == [0]
    assert spec.data.dataset == "synthetic" and spec.data.synthetic.train_per_class == 20
    assert (spec.model.backbone, spec.model.depth) == ("resnet", 8)
    assert (spec.train.epochs, spec.train.batch_size) == (2, 64)


@pytest.mark.parametrize("path", sorted(SPECS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(SPECS)))
def test_spec_file_names_the_schema_for_editors(path):
    first = path.read_text().splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    assert (path.parent / first[len(prefix):]).resolve() == SPECS / "spec.schema.json"


def test_committed_spec_files_satisfy_the_json_schema():
    import jsonschema  # in the test extra: this test never skips

    validator = jsonschema.Draft7Validator(spec_json_schema())
    for path in SPECS.rglob("*.yaml"):
        if not path.name.startswith("_"):
            data = YAML(typ="safe", pure=True).load(path.read_text())
            assert not list(validator.iter_errors(data)), path


# ------------------------------------------------------------------------------------ invalid specs

# (id, YAML text, dotted field path, "line:col" of the key to blame)
INVALID = [
    ("unknown_backbone", "name: x\nmodel:\n  backbone: vgg\n", "model.backbone", "3:3"),
    ("resnet_depth_111", "name: x\nmodel:\n  depth: 111\n", "model.depth", "3:3"),
    ("alpha_with_resnet", "name: x\nmodel:\n  alpha: 48\n", "model.alpha", "3:3"),
    ("pyramidnet_without_alpha", "name: x\nmodel:\n  backbone: pyramidnet\n", "model.alpha", "3:3"),
    ("linear_with_depth", "name: x\nmodel:\n  backbone: linear\n  depth: 8\n", "model.depth", "4:3"),
    ("aux_cutout_without_cutout", "name: x\ntask:\n  aux: {kind: cutout}\n", "augment.cutout", "3:9"),
    ("aux_ricap_without_ricap", "name: x\ntask:\n  aux: {kind: ricap}\n", "augment.ricap", "3:9"),
    ("aux_crop_with_crop_null", "name: x\ntask:\n  aux: {kind: crop}\naugment:\n  crop: null\n",
     "augment.crop", "5:3"),
    ("milestones_not_increasing", "name: x\ntrain:\n  milestones: [200, 100]\n", "train.milestones", "3:3"),
    ("milestone_not_below_epochs", "name: x\ntrain:\n  epochs: 10\n  milestones: [5, 10]\n",
     "train.milestones", "4:3"),
    ("labels_none_without_aux", "name: x\ntask:\n  labels: none\n", "task.labels", "3:3"),
    ("transfer_with_labels_none",
     "name: x\ntask:\n  labels: none\n  aux: {kind: crop}\ntransfer: {from: a, mode: linear}\n",
     "task.labels", "3:3"),
    ("unknown_aux_kind", "name: x\ntask:\n  aux: {kind: jigsaw}\n", "task.aux.kind", "3:9"),
    ("aux_without_kind", "name: x\ntask:\n  aux: {weight: 1}\n", "task.aux.kind", "3:3"),
    ("unknown_top_level_key", "name: x\noptimizer: adam\n", "optimizer", "2:1"),
    ("unknown_nested_key", "name: x\ntrain:\n  learning_rate: 0.1\n", "train.learning_rate", "3:3"),
    ("unknown_aux_key", "name: x\ntask: {aux: {kind: crop, size: 3}}\n", "task.aux.size", "2:26"),
    ("negative_lr", "name: x\ntrain:\n  lr: -0.1\n", "train.lr", "3:3"),
    ("batch_size_zero", "name: x\ntrain:\n  batch_size: 0\n", "train.batch_size", "3:3"),
    ("momentum_one", "name: x\ntrain: {momentum: 1.0}\n", "train.momentum", "2:9"),
    ("name_with_slash", "name: a/b\n", "name", "1:1"),
    ("name_with_space", "seeds: [0]\nname: a b\n", "name", "2:1"),
    ("missing_name", "# a comment first\nseeds: [0]\n", "name", "2:1"),
    ("empty_file", "", "name", "1:1"),
    ("only_comments", "# nothing here yet\n", "name", "1:1"),
    ("repeated_seeds", "name: x\nseeds: [1, 1]\n", "seeds", "2:1"),
    ("empty_seeds", "name: x\nseeds: []\n", "seeds", "2:1"),
    ("negative_seed", "name: x\nseeds: [0, -1]\n", "seeds.1", "2:12"),
    ("labelset_aux_repeats_main", "name: x\ntask:\n  aux: {kind: labelset, labels: gt}\n",
     "task.aux.labels", "3:25"),
    ("labelset_aux_without_labels", "name: x\ntask:\n  aux: {kind: labelset}\n", "task.aux.labels", "3:3"),
    ("superclass_on_cifar10", "name: x\ndata:\n  dataset: cifar10\ntask:\n  labels: superclass\n",
     "task.labels", "5:3"),
    ("labels_on_crop_aux", "name: x\ntask:\n  aux: {kind: crop, labels: gt}\n", "task.aux.labels", "3:21"),
    ("cutout_larger_than_image", "name: x\naugment:\n  cutout: {size: 40}\n", "augment.cutout.size", "3:12"),
    ("crop_padding_too_large", "name: x\naugment: {crop: {padding: 20}}\n", "augment.crop.padding", "2:18"),
    ("segmentation_aux_on_linear",
     "name: x\nmodel: {backbone: linear}\naugment: {cutout: {}}\ntask: {aux: {kind: cutout}}\n",
     "task.aux.kind", "4:14"),
    ("string_epochs", "name: x\ntrain:\n  epochs: many\n", "train.epochs", "3:3"),
    ("fractional_epochs", "name: x\ntrain: {epochs: 1.5}\n", "train.epochs", "2:9"),
    ("section_not_a_mapping", "name: x\ntrain: 5\n", "train", "2:1"),
    ("transfer_bn_with_finetune", "name: x\ntransfer: {from: a, mode: finetune, bn: train}\n",
     "transfer.bn", "2:37"),
    ("transfer_without_mode", "name: x\ntransfer: {from: a}\n", "transfer.mode", "2:1"),
    ("transfer_from_itself", "name: x\ntransfer: {from: x, mode: linear}\n", "transfer.from", "2:12"),
    ("transfer_with_linear_backbone", "name: x\nmodel: {backbone: linear}\ntransfer: {from: a, mode: linear}\n",
     "transfer", "3:1"),
    ("unknown_device", "name: x\nruntime: {device: tpu}\n", "runtime.device", "2:11"),
    ("bad_yaml_syntax", "name: x\ntrain:\n  epochs: [1, 2\n", "<spec>", "4:1"),
    ("bad_yaml_indentation", "name: x\n  seeds: [0]\n", "<spec>", "2:8"),
    ("duplicate_key", "name: x\nname: y\n", "<spec>", "2:1"),
    ("not_a_mapping", "- name: x\n", "<spec>", "1:1"),
    ("extends_not_a_path", "extends: 3\nname: x\n", "extends", "1:1"),
]


def test_invalid_cases_are_distinct():
    assert len(INVALID) >= 20
    assert len({text for _, text, _, _ in INVALID}) == len({case_id for case_id, *_ in INVALID}) == len(INVALID)


@pytest.mark.parametrize(("text", "field", "where"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_spec_names_file_line_and_field(workdir, text, field, where):
    _write(workdir, "bad.yaml", text)
    result = _validate("bad.yaml")
    assert result.exit_code == 2, result.output
    assert f"bad.yaml:{where} {field}: " in result.output
    assert "Traceback" not in result.output
    assert "ok bad.yaml" not in result.output


def test_unknown_keys_list_the_allowed_keys(workdir):
    _write(workdir, "a.yaml", "name: x\ntrain:\n  learning_rate: 0.1\n")
    _write(workdir, "b.yaml", "name: x\noptimizer: adam\n")
    _write(workdir, "c.yaml", "name: x\ntask: {aux: {kind: crop, size: 3}}\n")
    output = _validate("a.yaml", "b.yaml", "c.yaml").output
    assert "unknown key 'learning_rate'; allowed: epochs, batch_size, lr, momentum" in output
    assert "unknown key 'optimizer'; allowed: name, seeds, data, model, task" in output
    assert "allowed: kind, labels, weight, crop_label" in output  # the crop task's own fields


def test_choice_errors_list_the_choices(workdir):
    _write(workdir, "a.yaml", "name: x\nmodel:\n  backbone: vgg\n")
    _write(workdir, "b.yaml", "name: x\ntask:\n  aux: {kind: jigsaw}\n")
    output = _validate("a.yaml", "b.yaml").output
    assert "'vgg' is not one of the choices; allowed: 'resnet', 'pyramidnet', 'linear' or 'wrn'" in output
    assert "unknown kind 'jigsaw'; allowed: kind: 'labelset', 'crop', 'cutout', 'ricap', 'rotation'" in output


def test_location_points_at_the_offending_key_deep_in_a_file(tmp_path):
    path = _write(tmp_path, "spec.yaml", "# header\n# more header\nname: x\nseeds: [0]\n\n"
                  "train:\n  epochs: 30\n  batch_size: 64\n  milestones: [10, 40]\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (problem,) = info.value.problems
    assert (problem.source, problem.line, problem.column, problem.path) == (str(path), 9, 3, "train.milestones")


def test_yaml_syntax_error_names_where_the_construct_started(workdir):
    _write(workdir, "bad.yaml", "name: x\ntrain:\n  epochs: [1, 2\n")
    output = _validate("bad.yaml").output
    assert "invalid YAML" in output and "started at line 3, column 11" in output


def test_every_field_problem_of_a_spec_is_reported(workdir):
    # Cross-field rules (like model.depth 111) run only once every field is valid on its own.
    _write(workdir, "bad.yaml", "name: x\nmodel: {depth: 111}\ntrain: {lr: -1, batch_size: 0}\n")
    output = _validate("bad.yaml").output
    assert "bad.yaml:3:9 train.lr: " in output and "bad.yaml:3:17 train.batch_size: " in output


def test_validate_reports_each_file(workdir):
    _write(workdir, "good.yaml", "name: good\n")
    _write(workdir, "bad.yaml", "name: bad\ntrain: {epochs: 0}\n")
    _write(workdir, "also-good.yaml", "name: also-good\n")
    result = _validate("good.yaml", "bad.yaml", "also-good.yaml")
    assert result.exit_code == 2
    assert "ok good.yaml" in result.output and "ok also-good.yaml" in result.output
    assert "bad.yaml:2:9 train.epochs: " in result.output


def test_validate_without_spec_files_fails(workdir):
    (workdir / "empty").mkdir()
    result = _validate("empty")
    assert result.exit_code == 2 and "no spec files found" in result.output


def test_missing_spec_file_is_reported(workdir):
    result = _validate("nope.yaml")
    assert result.exit_code == 2 and "nope.yaml <spec>: no such file (spec file)" in result.output
    assert "allowed" not in result.output and "YAML" not in result.output  # not the format of a file that is absent


@pytest.mark.parametrize("command", ["validate", "run", "show"])
def test_a_positional_key_value_is_an_override_without_set(workdir, command):
    result = CliRunner().invoke(app, [command, "train.lr=0.05"])
    assert result.exit_code == 2
    assert "train.lr=0.05 <spec>: looks like an override: use --set train.lr=0.05" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------ --set overrides

def test_set_overrides_change_the_resolved_spec(tmp_path):
    path = _write(tmp_path, "s.yaml", "name: s\ntrain:\n  lr: 0.1\n  milestones: [150, 225]\n")
    spec = load_spec(path, ["train.lr=0.05", "train.milestones=[100, 200]", "task.aux={kind: crop}",
                            "name=s2", "seeds=[3, 4]"])
    assert spec.train.lr == 0.05 and spec.train.milestones == [100, 200]
    assert spec.task.aux is not None and spec.task.aux.kind == "crop"
    assert spec.name == "s2" and spec.seeds == [3, 4]


def test_set_plus_adds_and_tilde_deletes(tmp_path):
    path = _write(tmp_path, "s.yaml", "name: s\naugment:\n  crop: null\n  cutout: {size: 8}\n")
    spec = load_spec(path, ["+runtime.threads=2", "~augment.crop", "~augment.cutout.size"])
    assert spec.runtime.threads == 2
    assert spec.augment.crop is not None and spec.augment.crop.padding == 4  # deleted: back to the default
    assert spec.augment.cutout is not None and spec.augment.cutout.size == 16
    assert load_spec(path, ["~augment.missing.key"]).augment.crop is None  # deleting nothing is a no-op


def test_exponent_notation_is_a_float():
    # YAML 1.2: 1e-4 is a number (YAML 1.1 loaders read it as the string "1e-4").
    spec = load_spec(PAPER / "table1-gt.yaml", ["train.weight_decay=5e-4", "train.lr=1e-1"])
    assert spec.train.weight_decay == 5e-4 and isinstance(spec.train.weight_decay, float)
    assert spec.train.lr == 0.1


def test_exponent_notation_in_a_file_is_a_float(tmp_path):
    path = _write(tmp_path, "s.yaml", "name: s\ntrain: {weight_decay: 1e-4, lr: 1E-1}\n")
    spec = load_spec(path)
    assert spec.train.weight_decay == 1e-4 and spec.train.lr == 0.1


INVALID_SETS = [
    ("invalid_value", "train.epochs=abc", "train.epochs", "Input should be a valid integer"),
    ("value_not_yaml", "train.lr=[1", "train.lr", "the value is not valid YAML"),
    ("malformed_no_equals", "train.lr", "train.lr", "malformed override"),
    ("malformed_delete_with_value", "~train.lr=3", "train.lr", "malformed override"),
    ("malformed_empty_key", "=3", "<spec>", "malformed override"),
    ("unknown_key", "train.lrr=0.1", "train.lrr", "unknown key 'lrr'"),
    ("delete_required_name", "~name", "name", "Field required"),
]


@pytest.mark.parametrize(("override", "field", "message"), [c[1:] for c in INVALID_SETS],
                         ids=[c[0] for c in INVALID_SETS])
def test_invalid_set_names_the_override_and_field(workdir, override, field, message):
    _write(workdir, "ok.yaml", "name: x\n")
    result = _validate("ok.yaml", "--set", override)
    assert result.exit_code == 2, result.output
    assert f"ok.yaml (--set {override}) {field}: {message}" in result.output
    assert "Traceback" not in result.output


def test_set_applies_through_the_cli(workdir):
    _write(workdir, "s.yaml", "name: s\ntrain: {epochs: 10, milestones: [5]}\n")
    assert _validate("s.yaml", "-S", "train.epochs=5").exit_code == 2  # milestone 5 no longer below epochs
    assert _validate("s.yaml", "-S", "train.epochs=5", "-S", "train.milestones=[]").exit_code == 0


# ------------------------------------------------------------------------------------ extends

def test_extends_merges_mappings_and_replaces_lists(tmp_path):
    _write(tmp_path, "_base.yaml", "seeds: [0, 1, 2]\ntrain:\n  epochs: 3\n  batch_size: 64\n  milestones: [1, 2]\n"
           "model: {backbone: resnet, depth: 8}\n")
    path = _write(tmp_path, "s.yaml", "extends: _base.yaml\nname: s\nseeds: [7]\ntrain:\n  epochs: 5\n"
                  "  milestones: [4]\n")
    spec = load_spec(path)
    assert spec.seeds == [7]
    assert (spec.train.epochs, spec.train.batch_size, spec.train.milestones) == (5, 64, [4])
    assert spec.model.depth == 8


def test_extends_chains_and_lists_apply_in_order(tmp_path):
    _write(tmp_path, "_a.yaml", "train: {epochs: 3, batch_size: 16, lr: 0.3}\n")
    _write(tmp_path, "_b.yaml", "extends: _a.yaml\ntrain: {batch_size: 32, milestones: [1]}\n")
    _write(tmp_path, "sub/_c.yaml", "train: {lr: 0.05}\nmodel: {depth: 20}\n")
    path = _write(tmp_path, "s.yaml", "extends: [_b.yaml, sub/_c.yaml]\nname: s\n")
    spec = load_spec(path)
    assert (spec.train.epochs, spec.train.batch_size, spec.train.lr, spec.train.milestones) == (3, 32, 0.05, [1])
    assert spec.model.depth == 20


def test_extends_null_clears_a_base_value(tmp_path):
    _write(tmp_path, "_base.yaml", "model: {backbone: resnet, depth: 8}\n")
    path = _write(tmp_path, "s.yaml", "extends: _base.yaml\nname: s\nmodel: {backbone: linear, depth: null}\n")
    assert load_spec(path).model.depth is None


def test_circular_extends_is_reported_at_the_extends_key(tmp_path):
    _write(tmp_path, "_a.yaml", "extends: _b.yaml\n")
    _write(tmp_path, "_b.yaml", "# b\nextends: [_a.yaml]\n")
    path = _write(tmp_path, "s.yaml", "extends: _a.yaml\nname: s\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (problem,) = info.value.problems
    assert problem.path == "extends" and problem.source.endswith("_b.yaml") and problem.line == 2
    assert "circular extends: _a.yaml -> _b.yaml -> _a.yaml" in problem.message


def test_extending_itself_is_circular(workdir):
    _write(workdir, "s.yaml", "name: s\nextends: s.yaml\n")
    result = _validate("s.yaml")
    assert result.exit_code == 2 and "s.yaml:2:1 extends: circular extends: s.yaml -> s.yaml" in result.output


def test_missing_base_is_reported_at_the_extends_key(workdir):
    _write(workdir, "s.yaml", "name: s\nextends: _nope.yaml\n")
    result = _validate("s.yaml")
    assert result.exit_code == 2 and "s.yaml:2:1 extends: no such base file '_nope.yaml'" in result.output


def test_error_in_a_base_points_at_the_base_file(workdir):
    _write(workdir, "_base.yaml", "# base\ntrain:\n  epochs: 3\n  batch_size: -64\n")
    _write(workdir, "s.yaml", "extends: _base.yaml\nname: s\n")
    result = _validate("s.yaml")
    assert result.exit_code == 2
    assert "_base.yaml:4:3 train.batch_size: " in result.output


def test_yaml_error_in_a_base_points_at_the_base_file(workdir):
    _write(workdir, "_base.yaml", "train: {epochs: 3\n")
    _write(workdir, "s.yaml", "extends: _base.yaml\nname: s\n")
    result = _validate("s.yaml")
    assert result.exit_code == 2 and "_base.yaml:2:1 <spec>: invalid YAML" in result.output


@pytest.mark.parametrize(("epochs", "milestones"), [(300, [150, 225]), (200, [100, 150]), (10, [5, 7]),
                                                    (3, [1, 2]), (2, [1]), (1, [])])
def test_default_milestones_are_half_and_three_quarters_of_the_epochs(workdir, epochs, milestones):
    path = _write(workdir, "s.yaml", f"name: s\ntrain:\n  epochs: {epochs}\n")
    assert load_spec(path).train.milestones == milestones
    resolved = YAML(typ="safe", pure=True).load(dump_spec(load_spec(path)))
    assert resolved["train"] == {**resolved["train"], "epochs": epochs, "milestones": milestones}


def test_default_milestones_follow_an_epochs_override_and_explicit_ones_stay(workdir):
    path = _write(workdir, "s.yaml", "name: s\n")
    assert load_spec(path, ["train.epochs=40"]).train.milestones == [20, 30]
    explicit = _write(workdir, "e.yaml", "name: e\ntrain: {epochs: 10, milestones: [3]}\n")
    assert load_spec(explicit).train.milestones == [3]
    assert load_spec(explicit, ["train.epochs=20"]).train.milestones == [3]
    assert "milestone 10 is not below train.epochs (5)" in _validate("e.yaml", "--set", "train.milestones=[10]",
                                                                     "--set", "train.epochs=5").output


def test_own_key_wins_over_the_base_location(workdir):
    _write(workdir, "_base.yaml", "train: {epochs: 3}\n")
    _write(workdir, "s.yaml", "extends: _base.yaml\nname: s\ntrain: {epochs: 0}\n")
    assert "s.yaml:3:9 train.epochs: " in _validate("s.yaml").output


# ------------------------------------------------------------------------------------ directories

def test_directory_expansion_skips_bases(tmp_path):
    _write(tmp_path, "_base.yaml", "train: {epochs: 3, milestones: [1]}\n")
    _write(tmp_path, "b.yaml", "extends: _base.yaml\nname: b\n")
    _write(tmp_path, "a.yml", "name: a\n")
    _write(tmp_path, "sub/c.yaml", "name: c\n")
    _write(tmp_path, "sub/_d.yaml", "not: a spec\n")
    _write(tmp_path, "notes.txt", "name: n\n")
    assert spec_files([tmp_path]) == [tmp_path / "a.yml", tmp_path / "b.yaml", tmp_path / "sub/c.yaml"]
    result = _validate(str(tmp_path))
    assert result.exit_code == 0 and result.output.count("ok ") == 3


def test_explicit_files_are_taken_as_given(tmp_path):
    path = _write(tmp_path, "_base.yaml", "name: base\n")
    assert spec_files([path]) == [path]


# ------------------------------------------------------------------------------------ schema

def test_committed_schema_is_the_generated_one():
    committed = json.loads((SPECS / "spec.schema.json").read_text())
    assert committed == spec_json_schema()


def test_schema_command_prints_the_schema(tmp_path):
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output) == spec_json_schema()
    assert result.output == (SPECS / "spec.schema.json").read_text()
    out = tmp_path / "schema.json"
    assert runner.invoke(app, ["schema", "--out", str(out)]).exit_code == 0
    assert json.loads(out.read_text()) == spec_json_schema()


def test_every_schema_field_has_a_description():
    schema = spec_json_schema()
    models = {"Spec": schema, **schema["definitions"]}
    missing = [f"{model}.{field}" for model, definition in models.items()
               for field, prop in definition.get("properties", {}).items() if not prop.get("description")]
    assert missing == []
    assert "150 and 225" in schema["definitions"]["TrainSpec"]["properties"]["milestones"]["description"]


def test_schema_is_draft_07_and_knows_extends():
    schema = spec_json_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert "extends" in schema["properties"] and schema["required"] == ["name"]
    assert all("$defs" not in json.dumps(v) for v in schema.values())
