"""`auxcli run --executor slurm` on a real one-node Slurm cluster, into a real MLflow server on PostgreSQL.

The engines are started once per session (tests/cluster/conftest.py). Every job is a real `sbatch` through
submitit; states come from `squeue` and the run folders, as `auxcli plan` reads them.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from engines import wait_until
from typer.testing import CliRunner

from auxcli.cli import app

REPO = Path(__file__).resolve().parents[2]
CHAIN = ["mini-table1-superclass", "mini-table2-probe-superclass", "mini-table3-finetune-superclass"]
SMALL = ["--set", "data.synthetic.train_per_class=4", "--set", "data.synthetic.test_per_class=2",
         "--set", "train.epochs=2", "--set", "train.milestones=[1]", "--set", "runtime.threads=1",
         "--set", "seeds=[0]"]
ON_ONE_NODE = ["--executor", "slurm", "--slurm", "runs_dir_shared=true", "--slurm", "cpus_per_task=1",
               "--slurm", "timeout_min=20"]
TINY = """\
name: {name}
seeds: {seeds}
data:
  dataset: synthetic
  root: data
  synthetic: {{train_per_class: {per_class}, test_per_class: 2}}
model: {{backbone: resnet, depth: 8, base_width: 4}}
train: {{epochs: {epochs}, batch_size: 64, milestones: [1], eval_batch_size: 200}}
runtime: {{threads: 1}}
"""

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]  # one worker starts the engines


def auxcli(*args: str, cwd: Path, tracking: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m auxcli ARGS` in its own process, as a user on the login node would type it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking:
        env["MLFLOW_TRACKING_URI"] = tracking
    result = subprocess.run([sys.executable, "-m", "auxcli", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"auxcli {args}: exit {result.returncode}\n{result.stdout}{result.stderr}"
    return result


def copy_chain(folder: Path) -> Path:
    specs = folder / "specs"
    specs.mkdir(parents=True)
    for name in ["_base", *CHAIN]:
        shutil.copy(REPO / "specs" / "mini" / f"{name}.yaml", specs / f"{name}.yaml")
    return specs


def job_ids(folder: Path) -> dict[str, str]:
    return {p.parent.parent.name: json.loads(p.read_text())["job_id"] for p in folder.glob("runs/*/seed-*/slurm.json")}


def in_queue(slurm, ids) -> set[str]:
    return set(slurm.run("squeue", "-h", "-o", "%i").split()) & set(ids)


def seed_runs(server_url: str, spec_name: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server_url)
    experiment = client.get_experiment_by_name("auxcli")
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`auxcli.spec_name` = '{spec_name}'")
    return client, [r for r in runs if "auxcli.seed" in r.data.tags]


def test_chain_submitted_in_one_command_runs_in_order_and_reports_as_in_process(slurm, mlflow_server, tmp_path,
                                                                                 monkeypatch):
    cluster_dir, local_dir = tmp_path / "cluster", tmp_path / "local"
    copy_chain(cluster_dir), copy_chain(local_dir)
    submit = ["run", "specs", *SMALL, *ON_ONE_NODE]

    first = auxcli(*submit, cwd=cluster_dir, tracking=mlflow_server.url)
    assert first.stdout.count("submitted as Slurm job") == 3, first.stdout
    ids = job_ids(cluster_dir)
    assert set(ids) == set(CHAIN)
    records = {name: json.loads((cluster_dir / "runs" / name / "seed-0" / "slurm.json").read_text())
               for name in CHAIN}
    assert records[CHAIN[1]]["dependency"] == [ids[CHAIN[0]]]  # afterok on the source's job
    assert records[CHAIN[2]]["dependency"] == [ids[CHAIN[0]]]

    # the transfers wait on their source: pending while it is queued; submitting again adds nothing
    plan = auxcli("plan", "specs", *SMALL, cwd=cluster_dir).stdout
    assert "0:todo/pending" in plan, plan
    again = auxcli(*submit, cwd=cluster_dir, tracking=mlflow_server.url)
    assert "0 jobs submitted, 3 already queued" in again.stdout, again.stdout
    assert job_ids(cluster_dir) == ids

    # the same chain in-process on the embedded SQLite store, meanwhile (the machine's other core)
    local = subprocess.Popen([sys.executable, "-m", "auxcli", "run", "specs", *SMALL], cwd=local_dir,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"})

    def states() -> str:  # `auxcli plan` in this process: polling it costs no interpreter start-up
        monkeypatch.chdir(cluster_dir)
        result = CliRunner().invoke(app, ["plan", "specs", *SMALL])
        assert result.exit_code == 0, result.output
        return result.output

    wait_until(lambda: "/running" in states(), timeout_s=300, what="a job of the chain running", interval_s=1)
    wait_until(lambda: not in_queue(slurm, ids.values()), timeout_s=600, what="the chain leaving the queue",
               interval_s=1)
    plan = states()
    assert not any(f"/{state}" in plan for state in ("pending", "running", "failed")), plan
    assert local.wait(timeout=600) == 0, local.stdout.read()
    assert all((cluster_dir / "runs" / name / "seed-0" / "complete.json").exists() for name in CHAIN)
    assert plan == auxcli("plan", "specs", *SMALL, cwd=local_dir).stdout  # the same states as in-process

    # in dependency order: each transfer started after its source's run ended
    ended = {}
    for name in CHAIN:
        client, runs = seed_runs(mlflow_server.url, name)
        (run,) = runs
        assert run.info.status == "FINISHED"
        assert run.data.tags["auxcli.executor"] == "slurm"
        assert run.data.tags["auxcli.slurm.job_id"] == ids[name]
        assert run.data.tags["auxcli.slurm.log"] == records[name]["stdout"]
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
        ended[name] = (run.info.start_time, run.info.end_time)
    for name in CHAIN[1:]:
        assert ended[name][0] >= ended[CHAIN[0]][1]

    # nothing left to submit once everything is done
    after = auxcli(*submit, cwd=cluster_dir, tracking=mlflow_server.url)
    assert "0 jobs submitted, 0 already queued" in after.stdout, after.stdout  # done (or stale: run refuses)

    # `auxcli report` from another process reads the server as it reads the embedded store
    def table(text: str) -> list[str]:  # without the store's name and the source runs' ids, which differ
        lines = [line for line in text.splitlines() if not line.startswith("Store:")]
        return [re.sub(r"\([0-9a-f]{8}\)", "(run)", line) for line in lines]

    served = auxcli("report", "specs", *SMALL, cwd=cluster_dir, tracking=mlflow_server.url).stdout
    embedded = auxcli("report", "specs", *SMALL, cwd=local_dir).stdout
    assert table(served) == table(embedded)


def test_preempted_job_is_requeued_and_resumes_from_last_pt(slurm, mlflow_server, tmp_path):
    epochs = 6
    (tmp_path / "pre.yaml").write_text(TINY.format(name="pre", seeds="[0]", per_class=16, epochs=epochs))
    auxcli("run", "pre.yaml", *ON_ONE_NODE, cwd=tmp_path, tracking=mlflow_server.url)
    (job_id,) = job_ids(tmp_path).values()
    folder = tmp_path / "runs" / "pre" / "seed-0"

    def epochs_done() -> int:
        try:
            return max(0, len((folder / "history.csv").read_text().splitlines()) - 1)
        except OSError:
            return 0

    wait_until(lambda: 1 <= epochs_done(), timeout_s=300, what="the first epoch of the job")
    interrupted_at = epochs_done()
    # submitit's preemption signal (what Slurm sends before preempting or at the time limit)
    # (Slurm holds a requeued job for its credential's lifetime, cred_expire: 10 s in this cluster, 120 by default)
    slurm.run("scancel", "--signal=USR2", job_id)
    wait_until(lambda: not in_queue(slurm, [job_id]) and (folder / "complete.json").exists(), timeout_s=600,
               what="the requeued job finishing")

    log = Path(json.loads((folder / "slurm.json").read_text())["stdout"]).read_text()
    assert "this job is preempted" in log and "Requeued job" in log, log[-2000:]
    assert interrupted_at < epochs  # the signal came mid-run
    with open(folder / "history.csv") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(1, epochs + 1))
    client, runs = seed_runs(mlflow_server.url, "pre")
    assert [r.info.status for r in runs] == ["FINISHED"]  # one run per seed, resumed, not a second one
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "test_acc")]
    assert sorted(steps) == list(range(1, epochs + 1))  # every epoch logged once


def test_cancel_leaves_no_job_behind(slurm, mlflow_server, tmp_path):
    (tmp_path / "long.yaml").write_text(TINY.format(name="long", seeds="[0, 1]", per_class=16, epochs=200))
    submitted = auxcli("run", "long.yaml", *ON_ONE_NODE, cwd=tmp_path, tracking=mlflow_server.url)
    assert submitted.stdout.count("submitted as Slurm job") == 2
    ids = list(job_ids(tmp_path).values())
    cancelled = auxcli("cancel", "long.yaml", cwd=tmp_path)
    assert "2 jobs cancelled" in cancelled.stdout, cancelled.stdout
    wait_until(lambda: not in_queue(slurm, ids), timeout_s=120, what="the cancelled jobs leaving the queue")
    plan = auxcli("plan", "long.yaml", cwd=tmp_path).stdout
    assert "/failed" in plan and "/pending" not in plan and "/running" not in plan, plan


def test_four_processes_logging_to_the_server_lose_nothing(mlflow_server, tmp_path):
    epochs = 3
    (tmp_path / "four.yaml").write_text(TINY.format(name="four", seeds="[0, 1, 2, 3]", per_class=4, epochs=epochs))
    auxcli("run", "four.yaml", "--concurrent", "4", cwd=tmp_path, tracking=mlflow_server.url)
    client, runs = seed_runs(mlflow_server.url, "four")
    assert sorted(r.data.tags["auxcli.seed"] for r in runs) == ["0", "1", "2", "3"]
    for run in runs:
        assert run.info.status == "FINISHED"
        for metric in ("train_loss", "test_acc"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert sorted(steps) == list(range(1, epochs + 1)), (run.info.run_name, metric, steps)
        assert client.list_artifacts(run.info.run_id)  # artifacts went through the server's proxy
    # the four seeds started at once agree on one parent run (duplicates deleted), which holds them all
    parents = client.search_runs([runs[0].info.experiment_id],
                                 filter_string="tags.`auxcli.parent` = 'true' and tags.`auxcli.spec_name` = 'four'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", parents
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert parents[0].data.metrics["seeds_finished"] == 4

    # other commands read the server alone: a bundle of the runs, and an analysis of two runs by MLflow id
    # with the run folders gone (their final weights come back through the server's artifact proxy)
    auxcli("bundle", "four.yaml", "-o", "four.tar.gz", cwd=tmp_path, tracking=mlflow_server.url)
    assert (tmp_path / "four.tar.gz").stat().st_size > 0
    (tmp_path / "runs").rename(tmp_path / "elsewhere")
    ids = [run.info.run_id for run in runs[:2]]
    auxcli("analyze", *ids, "--no-mlflow", "--out", "analysis", cwd=tmp_path, tracking=mlflow_server.url)
    assert (tmp_path / "analysis" / "probe.json").exists()


def test_nproc_2_runs_one_job_as_two_gloo_processes(slurm, mlflow_server, tmp_path):
    """`--executor slurm --nproc 2`: one Slurm job whose torchrun runs 2 ranks (one node; several nodes
    and GPUs are not tested here)."""
    (tmp_path / "pair.yaml").write_text(TINY.format(name="pair", seeds="[0]", per_class=2, epochs=2))
    submitted = auxcli("run", "pair.yaml", *ON_ONE_NODE, "--nproc", "2", cwd=tmp_path, tracking=mlflow_server.url)
    assert "1 job submitted" in submitted.stdout, submitted.stdout
    (job_id,) = job_ids(tmp_path).values()
    folder = tmp_path / "runs" / "pair" / "seed-0"
    record = json.loads((folder / "slurm.json").read_text())
    assert (record["nproc"], record["nodes"]) == (2, 1)
    wait_until(lambda: not in_queue(slurm, [job_id]), timeout_s=300, what="the torchrun job leaving the queue",
               interval_s=1)
    log = Path(record["stdout"]).read_text()
    assert (folder / "complete.json").exists(), log[-2000:] + Path(record["stderr"]).read_text()[-2000:]
    assert log.count("pair-s0 epoch 2/2") == 1  # progress from rank 0 only
    with open(folder / "history.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]
    client, runs = seed_runs(mlflow_server.url, "pair")
    (run,) = runs  # the two ranks made one MLflow run
    assert run.info.status == "FINISHED"
    assert run.data.tags["auxcli.world_size"] == "2"  # the process group the ranks joined
    assert (run.data.tags["auxcli.executor"], run.data.tags["auxcli.slurm.job_id"]) == ("slurm", job_id)
