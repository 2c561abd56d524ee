"""The launch layer without a cluster: the plan every executor gets, the sbatch options a job gets, and
the one-paragraph refusals of `auxcli run --executor slurm` (the real engines: tests/cluster/)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from auxcli.cli import app


def fake_slurm(folder: Path, partitions: str = "debug") -> Path:
    """`sbatch` and `sinfo` stand-ins on the PATH (sinfo lists `partitions`); nothing is submitted."""
    bin_dir = folder / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("sbatch", "echo 'fake sbatch: no cluster here' >&2; exit 1"),
                       ("sinfo", f"printf '{partitions}\\n'"), ("squeue", "exit 0")):
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return bin_dir


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_executor_slurm_without_sbatch_on_the_path_is_exit_2(tiny_spec, monkeypatch, tmp_path):
    spec = tiny_spec("nosbatch")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    result = invoke("run", str(spec), "--executor", "slurm")
    assert result.exit_code == 2
    assert "no `sbatch` on the PATH" in result.output and "Traceback" not in result.output


def test_unknown_launcher_key_names_the_file_and_the_allowed_keys(tiny_spec, workdir):
    spec = tiny_spec("badkey")
    launcher = workdir / "slurm.yaml"
    launcher.write_text("partition: gpu\npartitoin: gpu\n")
    result = invoke("run", str(spec), "--executor", "slurm", "--launcher", str(launcher))
    assert result.exit_code == 2
    assert str(launcher) in result.output and "partitoin" in result.output
    assert "timeout_min" in result.output and "additional_parameters" in result.output


def test_bad_slurm_flag_value_is_exit_2_naming_the_key(tiny_spec):
    spec = tiny_spec("badvalue")
    result = invoke("run", str(spec), "--executor", "slurm", "--slurm", "timeout_min=soon")
    assert result.exit_code == 2 and "timeout_min" in result.output and "soon" in result.output


def test_launcher_settings_without_executor_slurm_are_refused(tiny_spec):
    result = invoke("run", str(tiny_spec("local")), "--slurm", "partition=gpu")
    assert result.exit_code == 2 and "--executor slurm" in result.output


def test_executor_slurm_refuses_the_embedded_sqlite_store(tiny_spec, monkeypatch, workdir):
    spec = tiny_spec("sqlite")
    monkeypatch.setenv("PATH", f"{fake_slurm(workdir)}{os.pathsep}{os.environ['PATH']}")
    result = invoke("run", str(spec), "--executor", "slurm")
    assert result.exit_code == 2
    assert "sqlite:///" in result.output and "tracking server" in result.output and "mlflow server" in result.output


def test_executor_slurm_refuses_a_node_local_runs_folder_unless_told_it_is_shared(tiny_spec, monkeypatch, workdir):
    spec = tiny_spec("local-runs")
    monkeypatch.setenv("PATH", f"{fake_slurm(workdir)}{os.pathsep}{os.environ['PATH']}")
    server = ["--set", "tracking.uri=http://127.0.0.1:9"]
    runs = workdir / "runs"
    if not str(runs.resolve()).startswith(("/tmp", "/var/tmp")):
        pytest.skip(f"pytest's temporary folder {runs} is not node-local here")
    result = invoke("run", str(spec), "--executor", "slurm", *server, "--set", f"runtime.runs_dir={runs}")
    assert result.exit_code == 2
    assert "runtime.runs_dir" in result.output and "runs_dir_shared=true" in result.output
    # told it is shared, it goes on to the next check (the fake sinfo knows no partition 'gpux')
    result = invoke("run", str(spec), "--executor", "slurm", *server, "--slurm", "runs_dir_shared=true",
                    "--slurm", "partition=gpux")
    assert result.exit_code == 2 and "runtime.runs_dir" not in result.output


def test_unknown_partition_lists_the_clusters_partitions(tiny_spec, monkeypatch, workdir):
    spec = tiny_spec("partition")
    fake = fake_slurm(workdir, "debug\ngpu")
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    result = invoke("run", str(spec), "--executor", "slurm", "--set", "tracking.uri=http://127.0.0.1:9",
                    "--slurm", "runs_dir_shared=true", "--slurm", "partition=gpux")
    assert result.exit_code == 2
    assert "'gpux'" in result.output and "debug, gpu" in result.output


def test_plan_jobs_order_transfers_after_every_seed_of_their_source(tiny_spec, workdir):
    from auxcli.launch.jobs import plan_jobs

    source = tiny_spec("src")
    source.write_text(source.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    probe = tiny_spec("probe", "transfer: {from: src, mode: linear}\n")
    (workdir / "runs" / "src" / "seed-1").mkdir(parents=True)
    (workdir / "runs" / "src" / "seed-1" / "last.pt").write_bytes(b"")  # an interrupted seed: partial
    jobs = plan_jobs([probe, source], ["train.lr=0.05"], None)
    assert [job.label for job in jobs] == ["src-s0", "src-s1", "probe-s0"]
    assert [job.state for job in jobs] == ["todo", "partial", "todo"]
    assert jobs[2].after == ("src-s0", "src-s1") and jobs[0].after == ()
    assert jobs[2].run_arguments(force=True) == [str(probe), "--seed", "0", "--set", "train.lr=0.05", "--force"]


def test_sbatch_script_carries_the_dependency_resources_and_no_spec_settings(tiny_spec, tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    from auxcli.launch.jobs import plan_jobs
    from auxcli.launch.settings import load_settings
    from auxcli.launch.slurm import SlurmExecutor

    launcher = tmp_path / "slurm.yaml"
    launcher.write_text("partition: gpu\ntimeout_min: 30\nmem_gb: 8\nadditional_parameters: {mail_type: END}\n")
    settings = load_settings(launcher, ["account=lab", "cpus_per_task=4"])
    (job,) = plan_jobs([tiny_spec("deps")], [], None)
    params = SlurmExecutor(settings, tmp_path / "logs").sbatch_parameters(job, ["11", "12"])
    script = _make_sbatch_string(command="python -m submitit.core._submit x", folder=tmp_path, **params)
    for line in ("--dependency=afterok:11:12", "--partition=gpu", "--account=lab", "--cpus-per-task=4",
                 "--mem=8GB", "--time=30", "--job-name=deps-s0", "--kill-on-invalid-dep=yes", "--mail-type=END"):
        assert f"#SBATCH {line}\n" in script, (line, script)


def test_launch_tags_name_the_executor_job_and_log(monkeypatch):
    from auxcli.launch.tags import launch_tags

    monkeypatch.delenv("AUXCLI_EXECUTOR", raising=False)
    assert launch_tags() == {}
    monkeypatch.setenv("AUXCLI_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("AUXCLI_SLURM_LOG", "/shared/logs/42_0_log.out")
    assert launch_tags() == {"auxcli.executor": "slurm", "auxcli.slurm.job_id": "42",
                             "auxcli.slurm.log": "/shared/logs/42_0_log.out"}


def test_a_tracking_server_keeps_its_own_artifact_root(monkeypatch):
    from auxcli.tracking import default_artifact_location

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_artifact_location("auxcli", "http://127.0.0.1:5000") is None  # proxied by the server
    assert default_artifact_location("auxcli", "sqlite:///x.db").startswith("file:")


def test_a_slurm_job_runs_auxcli_run_or_torchrun_with_slurms_nodes():
    from auxcli.launch.job import RENDEZVOUS_PORT, AuxcliRun

    args = ["specs/a.yaml", "--seed", "1"]
    assert AuxcliRun("py", args).command() == ["py", "-m", "auxcli", "run", *args]
    assert AuxcliRun("py", args, nproc=4).command() == [
        "py", "-m", "auxcli.train.launch", "--standalone", "--nproc-per-node=4", "-m", "auxcli", "run", *args]
    assert AuxcliRun("py", args, nproc=4).command(nodes=2, node_rank=1, master="node7") == [
        "py", "-m", "auxcli.train.launch", "--nnodes=2", "--node-rank=1", "--master-addr=node7",
        f"--master-port={RENDEZVOUS_PORT}", "--nproc-per-node=4", "-m", "auxcli", "run", *args]


def test_a_preempted_job_requeues_the_same_command_and_pickles_without_its_process():
    import pickle
    import subprocess
    import sys

    from auxcli.launch.job import AuxcliRun

    run = AuxcliRun(sys.executable, ["x.yaml", "--seed", "0"], nproc=2)
    run._process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    again = run.checkpoint()  # stops the child (SIGTERM) and returns the same call for submitit to requeue
    assert run._process.poll() is not None
    assert (again.function.run_args, again.function.nproc) == (run.run_args, 2)
    assert "_process" not in pickle.loads(pickle.dumps(run)).__dict__


def test_more_than_one_task_per_node_is_refused(tiny_spec, monkeypatch, workdir):
    """Each task would run the job's whole `auxcli run` (torchrun with --nproc): the same run twice at once."""
    monkeypatch.setenv("PATH", f"{fake_slurm(workdir)}{os.pathsep}{os.environ['PATH']}")
    result = invoke("run", str(tiny_spec("tasks")), "--executor", "slurm", "--nproc", "2",
                    "--slurm", "tasks_per_node=2")
    assert result.exit_code == 2, result.output
    assert "tasks_per_node 2" in result.output and "--nproc N" in result.output
    assert not (workdir / "runs").exists()


def test_nproc_runs_each_job_of_the_plan_under_torchrun_and_stops_at_the_first_failure(tiny_spec, workdir,
                                                                                        monkeypatch):
    """`--nproc N` (the Torchrun executor): one torchrun per job, over the plan's own command line."""
    from auxcli.train import launch

    started = []

    def fake_launch(nproc, run_args):
        started.append((nproc, list(run_args)))
        return 2 if len(started) == 2 else 0  # the second job fails as bad input would

    monkeypatch.setattr(launch, "launch", fake_launch)
    source = tiny_spec("src")
    source.write_text(source.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    probe = tiny_spec("probe", "transfer: {from: src, mode: linear}\n")
    result = invoke("run", str(probe), str(source), "--nproc", "2", "--set", "train.lr=0.05", "--force")
    assert result.exit_code == 2, result.output
    assert started == [(2, [str(source), "--seed", str(seed), "--set", "train.lr=0.05", "--force"]) for seed in (0, 1)]


def test_local_processes_open_each_running_specs_parent_run_before_any_seed_starts(tiny_spec, workdir,
                                                                                    monkeypatch):
    """Seeds started at once would each create their spec's parent run; the executor opens it first, once,
    for the specs with something to run (not for one whose every seed is done)."""
    from mlflow.tracking import MlflowClient

    from auxcli import concurrent
    from auxcli.launch.executors import LocalProcesses
    from auxcli.launch.jobs import plan_jobs

    two = tiny_spec("two")
    two.write_text(two.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    finished = tiny_spec("finished")
    folder = workdir / "runs" / "finished" / "seed-0"
    folder.mkdir(parents=True)
    from auxcli.specfile import dump_spec, load_spec

    (folder / "spec.resolved.yaml").write_text(dump_spec(load_spec(finished, [])))
    (folder / "metrics.json").write_text('{"final_test_acc": 0.5}')
    (folder / "complete.json").write_text("{}")
    jobs = plan_jobs([two, finished], [], None)
    assert [job.state for job in jobs] == ["todo", "todo", "done"]

    parents_at_launch = []

    def launch(jobs, **_):
        client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("auxcli").experiment_id
        parents_at_launch.extend(client.search_runs([experiment], "tags.`auxcli.parent` = 'true'"))
        return 0

    monkeypatch.setattr(concurrent, "run_concurrently", launch)
    LocalProcesses(concurrent=2).submit(jobs)
    assert [run.data.tags["auxcli.spec_name"] for run in parents_at_launch] == ["two"]
    assert parents_at_launch[0].data.params["seeds"] == "[0, 1]"


@pytest.mark.parametrize("flags", [["--nproc", "2"], ["--concurrent", "2"], ["--executor", "slurm"]])
def test_flags_that_start_processes_are_refused_inside_a_torchrun_worker(tiny_spec, monkeypatch, flags):
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1")):
        monkeypatch.setenv(name, value)  # what torchrun gives each worker
    result = invoke("run", str(tiny_spec("inside")), *flags)
    assert result.exit_code == 2, result.output
    assert flags[0] in result.output and "torchrun's processes" in result.output
    assert not (Path(tiny_spec("inside")).parent / "runs").exists()  # nothing started
