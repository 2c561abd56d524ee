"""`auxcli run --concurrent K`: independent runs in parallel processes, each its own MLflow run and folder."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.launch.jobs import plan_jobs

# Real subprocesses under torchrun/gloo: about one run in seven here, a gloo process aborts at exit or
# on reconnect ("terminate called without an active exception", SIGABRT inside torch), and a SIGTERM
# can race a child's start-up. Each rerun asserts everything again; a failure four times in a row fails.
SUBPROCESS_RERUNS = pytest.mark.flaky(reruns=3)


@pytest.mark.slow
@SUBPROCESS_RERUNS
def test_concurrent_two_seeds_make_two_finished_mlflow_runs_with_labelled_output(workdir, tiny_spec):
    spec = tiny_spec("conc")  # torch's default threads (all cores), so that --concurrent shares them out
    spec.write_text(spec.read_text().replace("seeds: [0]", "seeds: [0, 1]").replace("runtime: {threads: 1}", ""))
    result = CliRunner().invoke(app, ["run", str(spec), "--concurrent", "2"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("auxcli").experiment_id])
    runs = [r for r in runs if "auxcli.seed" in r.data.tags]  # the seeds' runs, not their spec's parent
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("conc-s0", "FINISHED"), ("conc-s1", "FINISHED")]
    (parent,) = client.search_runs([client.get_experiment_by_name("auxcli").experiment_id],
                                   filter_string="tags.`auxcli.parent` = 'true'")  # one, though both seeds started it
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.metrics["seeds_finished"] == 2
    import json

    import torch

    for seed in (0, 1):
        folder = workdir / "runs" / "conc" / f"seed-{seed}"
        assert (folder / "metrics.json").exists()
        # two CPU runs at once share the cores rather than each taking all of them
        environment = json.loads((folder / "repro" / "environment.json").read_text())
        assert environment["threads"] == max(1, torch.get_num_threads() // 2)
        # every line of a run's output is whole and carries its label
        assert re.search(rf"^\[conc-s{seed}\] conc-s{seed} epoch 2/2 .* img/s", result.output, re.MULTILINE)


@pytest.mark.parametrize(("device", "threads", "cuda", "expected"), [
    ("cpu", None, False, 4),    # 8 cores, 2 processes: 4 each
    ("auto", None, False, 4),   # auto without CUDA trains on the CPU
    ("auto", None, True, None),  # ... and with CUDA on the GPU: threads left alone
    ("cuda", None, True, None),
    ("cpu", 3, False, None),    # the spec's runtime.threads wins
])
def test_cpu_runs_share_the_cores(tiny_spec, device, threads, cuda, expected):
    from auxcli.concurrent import cpu_threads_each
    from auxcli.specfile import load_spec

    path = tiny_spec("share")
    runtime = f"runtime: {{device: {device}, threads: {threads or 'null'}}}"
    path.write_text(path.read_text().replace("runtime: {threads: 1}", runtime))
    spec = load_spec(path, [])
    assert cpu_threads_each(spec, processes=2, cores=8, cuda_available=cuda) == expected
    if expected:
        assert cpu_threads_each(spec, processes=16, cores=8, cuda_available=cuda) == 1  # never 0


def test_concurrent_jobs_put_transfers_after_their_sources(workdir, tiny_spec):
    probe = tiny_spec("probe", "transfer: {from: base, mode: linear}\n")
    base = tiny_spec("base")
    base.write_text(base.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    jobs = plan_jobs([probe, base], [], None)
    assert [(j.spec.name, j.seed, j.file.name) for j in jobs] == [
        ("base", 0, "base.yaml"), ("base", 1, "base.yaml"), ("probe", 0, "probe.yaml")]
    assert [j.seed for j in plan_jobs([base], [], 1)] == [1]


def test_concurrent_jobs_of_a_sweep_carry_each_points_overrides(workdir, tiny_spec):
    probe = tiny_spec("probe", "transfer: {from: base, mode: linear}\n")
    base = tiny_spec("base")
    jobs = plan_jobs([probe, base], ["train.epochs=3", "train.lr=0.1,0.05"], None)
    assert [job.spec.name for job in jobs] == ["base-lr0.1", "probe-lr0.1", "base-lr0.05", "probe-lr0.05"]
    by_name = {job.spec.name: job for job in jobs}
    # a child re-makes exactly its point from the file: fixed overrides, the point's value, its name and source
    assert by_name["base-lr0.05"].overrides == ("train.epochs=3", "train.lr=0.05", "name=base-lr0.05")
    assert by_name["probe-lr0.05"].overrides[-1] == "transfer.from=base-lr0.05"
    assert by_name["probe-lr0.05"].spec.transfer.from_ == "base-lr0.05"


@pytest.mark.slow
@SUBPROCESS_RERUNS
def test_concurrent_sweep_with_a_params_file_runs_each_point_in_its_own_process(workdir, tiny_spec):
    spec = tiny_spec("sw")
    (workdir / "params.yaml").write_text("train:\n  epochs: 1\n  milestones: []\n")
    result = CliRunner().invoke(app, ["run", str(spec), "--params", "params.yaml", "--set", "train.lr=0.1,0.05",
                                      "--concurrent", "2"])
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("auxcli").experiment_id],
                              filter_string="tags.`auxcli.seed` = '0'")
    got = {r.info.run_name: (r.info.status, r.data.params["train.lr"], r.data.params["train.epochs"]) for r in runs}
    assert got == {"sw-lr0.1-s0": ("FINISHED", "0.1", "1"), "sw-lr0.05-s0": ("FINISHED", "0.05", "1")}
    assert re.search(r"^\[sw-lr0\.05-s0\] sw-lr0\.05-s0 epoch 1/1 ", result.output, re.MULTILINE)


@pytest.mark.slow
@SUBPROCESS_RERUNS
def test_sigterm_to_the_parent_stops_every_run_as_killed(workdir, tiny_spec):
    import os
    import signal
    import subprocess
    import sys

    spec = tiny_spec("stop")
    spec.write_text(spec.read_text().replace("seeds: [0]", "seeds: [0, 1]").replace("epochs: 2", "epochs: 50")
                    .replace("milestones: [1]", "milestones: []"))
    parent = subprocess.Popen([sys.executable, "-m", "auxcli", "run", str(spec), "--concurrent", "2"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    started: set[str] = set()
    for line in parent.stdout:  # wait until both runs are in epoch 3 (epoch 1 is in last.pt)
        started |= {label for label in ("stop-s0", "stop-s1") if line.startswith(f"[{label}] {label} epoch 2/")}
        if len(started) == 2:
            break
    parent.send_signal(signal.SIGTERM)
    parent.stdout.read()
    assert parent.wait(timeout=120) == 143
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("auxcli").experiment_id])
    runs = [r for r in runs if "auxcli.seed" in r.data.tags]  # the seeds' runs, not their spec's parent
    assert sorted(r.info.run_name for r in runs) == ["stop-s0", "stop-s1"]
    # every run was stopped and ended, none left RUNNING; KILLED as a rule, but a SIGTERM that lands inside
    # an MLflow call can surface wrapped as FAILED (the runner's signal handling, not --concurrent's)
    assert {r.info.status for r in runs} <= {"KILLED", "FAILED"}
    for seed in (0, 1):
        assert (workdir / "runs" / "stop" / f"seed-{seed}" / "last.pt").exists()


@pytest.mark.parametrize(("flags", "expected"), [(["-q"], ["-q"]), ([], []), (["-vv"], ["-v", "-v"])])
def test_children_say_as_much_as_the_parent(tiny_spec, monkeypatch, flags, expected):
    """`auxcli -q run --concurrent K`: each child gets -q (its own command line would reset the level)."""
    from auxcli import concurrent

    started = []
    monkeypatch.setattr(concurrent, "run_concurrently", lambda jobs, **kw: started.extend(
        concurrent.child_command(job, kw["child_options"]) for job in jobs) or 0)
    result = CliRunner().invoke(app, [*flags, "run", str(tiny_spec("q")), "--concurrent", "2"])
    assert result.exit_code == 0, result.output
    (command,) = started
    assert command[3:command.index("run")] == expected
