"""`auxcli bench` measures what it says on a tiny spec (numbers are printed, not asserted)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from auxcli.cli import app


@pytest.mark.slow
def test_bench_prints_model_only_end_to_end_and_aux_head_rows(workdir, tiny_spec):
    spec = tiny_spec("bench", "task: {aux: {kind: cutout}}\naugment: {cutout: {size: 16}}\n")
    result = CliRunner().invoke(app, ["bench", str(spec), "--steps", "2", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    for row in ("model-only train step", "auxcli run, steady state", "no aux head", "cutout aux head"):
        line = next(line for line in result.output.splitlines() if row in line)
        rate = re.search(r"\s([\d,]+)(\s|$)", line.split(row, 1)[1]).group(1)
        assert float(rate.replace(",", "")) > 0
    assert re.search(r"\d\.\d\dx model-only", result.output)
    assert not (workdir / "runs").exists()  # the measured run lives in a temporary folder
