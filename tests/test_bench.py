"""`auxcli bench` measures what it says on a tiny spec (numbers are printed, not asserted)."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from auxcli.cli import app

JSON_KEYS = ("device", "backbone", "batch_size", "reference_images_per_second", "model_only_images_per_second",
             "end_to_end_images_per_second", "peak_flops", "achieved_flops")


def test_bench_json_has_every_key_and_consistent_figures(workdir, tiny_spec):
    spec = tiny_spec("bench")
    result = CliRunner().invoke(app, ["bench", str(spec), "--steps", "2", "--epochs", "0", "--workers", "0",
                                      "--device", "cpu", "--format", "json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert set(JSON_KEYS) <= set(row)
    assert (row["device"], row["backbone"], row["depth"], row["batch_size"]) == ("cpu", "resnet", 8, 64)
    assert row["precision"] == "fp32" and row["compile_mode"] == "none"  # resolved, never "auto"
    for key in JSON_KEYS[3:]:
        assert row[key] > 0, key
    assert row["achieved_flops"] == pytest.approx(row["end_to_end_images_per_second"] * row["train_flops_per_image"])
    assert row["end_to_end_vs_reference"] == pytest.approx(
        row["end_to_end_images_per_second"] / row["reference_images_per_second"])
    assert row["run_images_per_second"] is None  # --epochs 0: no real run


def test_bench_options_pick_the_backbone_and_bad_ones_name_the_option(workdir):
    bad = CliRunner().invoke(app, ["bench", "--backbone", "resnet", "--depth", "9"])
    assert bad.exit_code == 2 and "--depth model.depth: 9 is not a valid resnet depth" in bad.output


@pytest.mark.slow
def test_bench_text_compares_reference_model_only_end_to_end_run_and_aux_head(workdir, tiny_spec):
    spec = tiny_spec("bench", "task: {aux: {kind: cutout}}\naugment: {cutout: {size: 16}}\n")
    result = CliRunner().invoke(app, ["bench", str(spec), "--steps", "2", "--epochs", "1", "--workers", "0"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for row in ("(a) reference loop", "(b) auxcli model-only", "(c) auxcli end to end"):
        rate = re.search(r"([\d,]+) images/s", next(line for line in lines if row in line)).group(1)
        assert float(rate.replace(",", "")) > 0
    for row in ("auxcli run, steady state", "no aux head", "cutout aux head"):
        line = next(line for line in lines if row in line)
        rate = re.search(r"\s([\d,]+)(\s|$)", line.split(row, 1)[1]).group(1)
        assert float(rate.replace(",", "")) > 0
    assert re.search(r"\(c\)/\(a\) \d+\.\d\dx the reference loop", result.output)
    assert re.search(r"achieved [\d.]+ [GT]FLOP/s = [\d.]+% of [\d.]+ [GT]FLOP/s peak \(measured", result.output)
    assert not (workdir / "runs").exists()  # the measured run lives in a temporary folder


def test_bench_builds_every_registered_backbone_from_a_spec(workdir, tiny_spec):
    """`auxcli bench` hands the spec's model to `auxcli.perf` as a ModelChoice: every ModelSpec field a
    backbone reads must travel (a Wide ResNet needs widen_factor and dropout)."""
    from auxcli.bench import bench_choices
    from auxcli.models.registry import BACKBONES, create_backbone
    from auxcli.specfile import load_spec

    models = {"resnet": "{backbone: resnet, depth: 8, base_width: 4}",
              "pyramidnet": "{backbone: pyramidnet, depth: 8, alpha: 8, base_width: 4}",
              "linear": "{backbone: linear}",
              "wrn": "{backbone: wrn, depth: 10, widen_factor: 2, base_width: 4, dropout: 0.3}"}
    assert set(BACKBONES) <= set(models), "add the new backbone here"
    for name, model in models.items():
        path = tiny_spec(f"b-{name}")
        path.write_text(path.read_text().replace("{backbone: resnet, depth: 8, base_width: 4}", model))
        spec = load_spec(path, [])
        choice, _, _ = bench_choices(spec, "cpu")
        built = create_backbone(choice)
        assert built.feature_width == create_backbone(spec.model).feature_width
