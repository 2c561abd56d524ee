"""`auxcli plan`: transfers run after their sources, cycles are refused, statuses follow the run folders."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.errors import SpecError
from auxcli.catalogue import folder_state as run_status
from auxcli.plan import plan_order
from auxcli.spec import Spec
from auxcli.specfile import load_spec, spec_files

PAPER = Path(__file__).resolve().parents[1] / "specs" / "paper"
runner = CliRunner()


def _spec(name: str, source: str | None = None, **fields) -> Spec:
    transfer = {"transfer": {"from": source, "mode": "finetune"}} if source else {}
    return Spec.model_validate({"name": name, **transfer, **fields})


def _assert_transfers_follow_sources(names: list[str], specs: dict[str, Spec]) -> None:
    for position, name in enumerate(names):
        transfer = specs[name].transfer
        if transfer is not None and transfer.from_ in specs:
            assert names.index(transfer.from_) < position, f"{name} runs before {transfer.from_}"


def _planned_names(output: str) -> list[str]:
    """Spec names from the table rows (`step  name  seeds  ...`), in printed order."""
    return [m.group(1) for m in re.finditer(r"^ *\d+  +(\S+)", output, re.MULTILINE)]


def test_plan_orders_the_paper_suite(workdir):
    specs = {s.name: s for s in map(load_spec, spec_files([PAPER]))}
    result = runner.invoke(app, ["plan", str(PAPER)])
    assert result.exit_code == 0, result.output
    names = _planned_names(result.output)
    assert sorted(names) == sorted(specs) and len(names) == 19
    _assert_transfers_follow_sources(names, specs)
    assert "table1-superclass (linear, after step" in result.output
    assert "19 specs, 37 runs: 0 done, 0 partial, 37 todo" in result.output


def test_plan_order_moves_transfers_after_their_sources():
    specs = list(reversed([load_spec(f) for f in spec_files([PAPER])]))  # every transfer before its source
    ordered = [s.name for s in plan_order(specs)]
    _assert_transfers_follow_sources(ordered, {s.name: s for s in specs})
    # Specs without a transfer inside the set keep their given order.
    free = [s.name for s in specs if s.transfer is None or s.transfer.from_ == "init"]
    assert [n for n in ordered if n in free] == free


def test_plan_order_is_stable():
    specs = [_spec("c"), _spec("a"), _spec("b", source="z"), _spec("d")]
    assert [s.name for s in plan_order(specs)] == ["c", "a", "b", "d"]


def test_plan_order_places_a_dependent_right_after_its_chain():
    specs = [_spec("ft", source="mid"), _spec("other"), _spec("mid", source="root"), _spec("root")]
    assert [s.name for s in plan_order(specs)] == ["other", "root", "mid", "ft"]


@pytest.mark.parametrize("source", ["init", "runs/x/seed-0/final.pt", "0123456789abcdef", "not-in-the-set"])
def test_sources_outside_the_set_impose_no_order(source):
    specs = [_spec("b", source=source), _spec("a")]
    assert [s.name for s in plan_order(specs)] == ["b", "a"]


def test_plan_order_refuses_a_cycle():
    specs = [_spec("free"), _spec("a", source="c"), _spec("b", source="a"), _spec("c", source="b")]
    with pytest.raises(SpecError) as info:
        plan_order(specs)
    (problem,) = info.value.problems
    assert problem.path == "transfer.from"
    assert "cycle (a -> c -> b -> a" in problem.message


def test_plan_cli_cycle_exits_2(workdir):
    (workdir / "a.yaml").write_text("name: a\ntransfer: {from: b, mode: finetune}\n")
    (workdir / "b.yaml").write_text("name: b\ntransfer: {from: a, mode: linear}\n")
    result = runner.invoke(app, ["plan", "a.yaml", "b.yaml"])
    assert result.exit_code == 2
    assert "a.yaml transfer.from: transfers form a cycle (a -> b -> a" in result.output
    assert "Traceback" not in result.output


def test_plan_refuses_two_specs_with_one_name(workdir):
    (workdir / "a.yaml").write_text("name: same\n")
    (workdir / "b.yaml").write_text("name: same\n")
    result = runner.invoke(app, ["plan", "."])
    assert result.exit_code == 2 and "b.yaml name: 'same' is also the name of a.yaml" in result.output


def test_plan_reports_invalid_specs(workdir):
    (workdir / "a.yaml").write_text("name: a\ntrain: {epochs: 0}\n")
    result = runner.invoke(app, ["plan", "a.yaml"])
    assert result.exit_code == 2 and "a.yaml:2:9 train.epochs: " in result.output


def test_plan_without_spec_files_exits_2(workdir):
    (workdir / "empty").mkdir()
    assert runner.invoke(app, ["plan", "empty"]).exit_code == 2


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")


def test_run_status_follows_the_run_folder(tmp_path):
    spec = _spec("s", seeds=[0, 1, 2, 3], runtime={"runs_dir": str(tmp_path / "runs")})
    folder = tmp_path / "runs" / "s"
    _touch(folder / "seed-0" / "metrics.json")
    _touch(folder / "seed-0" / "complete.json")
    _touch(folder / "seed-1" / "last.pt")
    _touch(folder / "seed-2" / "last.pt")
    _touch(folder / "seed-2" / "metrics.json")  # trained, but the MLflow record was never completed
    (folder / "seed-3").mkdir()  # an empty folder is not a start
    assert [run_status(spec, seed) for seed in spec.seeds] == ["done", "partial", "incomplete", "todo"]
    assert run_status(spec, 9) == "todo"


def test_plan_cli_shows_each_seed_status(workdir):
    (workdir / "specs").mkdir()
    (workdir / "specs" / "src.yaml").write_text("name: src\nseeds: [0, 1, 2]\n")
    (workdir / "specs" / "ft.yaml").write_text("name: ft\ntransfer: {from: src, mode: finetune}\n")
    _touch(workdir / "runs" / "src" / "seed-0" / "metrics.json")
    _touch(workdir / "runs" / "src" / "seed-0" / "complete.json")
    _touch(workdir / "runs" / "src" / "seed-1" / "last.pt")
    result = runner.invoke(app, ["plan", "specs"])
    assert result.exit_code == 0, result.output
    assert _planned_names(result.output) == ["src", "ft"]
    src_row, ft_row = [line for line in result.output.splitlines() if re.match(r" *[12]  +", line)]
    assert "0:done 1:partial 2:todo" in src_row
    assert "src (finetune, after step 1)" in ft_row and "0:todo" in ft_row
    assert "2 specs, 4 runs: 1 done, 1 partial, 2 todo" in result.output


def test_plan_cli_reads_runs_dir_from_set(workdir):
    (workdir / "s.yaml").write_text("name: s\n")
    _touch(workdir / "elsewhere" / "s" / "seed-0" / "metrics.json")
    _touch(workdir / "elsewhere" / "s" / "seed-0" / "complete.json")
    assert "0:todo" in runner.invoke(app, ["plan", "s.yaml"]).output
    result = runner.invoke(app, ["plan", "s.yaml", "--set", "runtime.runs_dir=elsewhere"])
    assert result.exit_code == 0 and "0:done" in result.output
