"""Distributed training with real torchrun processes (gloo on CPU): equivalence with one process, one
MLflow run per seed, restarts after a dead worker, and the errors of a multi-process launch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from auxcli.cli import app
from auxcli.data.batches import Shard, sharded_batches
from auxcli.models.batchnorm import GhostBatchNorm2d, use_ghost_batch_norm
from auxcli.train.distributed import TEST_EXIT_ENV

# Real subprocesses under torchrun/gloo: about one run in seven here, a gloo process aborts at exit or
# on reconnect ("terminate called without an active exception", SIGABRT inside torch), and a SIGTERM
# can race a child's start-up. Each rerun asserts everything again; a failure four times in a row fails.
SUBPROCESS_RERUNS = pytest.mark.flaky(reruns=3)

ROOT = Path(__file__).resolve().parents[1]
EPOCH_METRICS = {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_seconds", "images_per_second"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Workers import this checkout, use one thread each, and send nothing anywhere."""
    path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return {**env, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def run(args: list[str], cwd: Path, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=timeout)


def runs_in_store(workdir: Path) -> tuple[mlflow.MlflowClient, list]:
    """The store a run in `workdir` writes by default (./mlflow.db), queried without global state."""
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("auxcli").experiment_id])
    return client, [r for r in runs if "auxcli.seed" in r.data.tags]  # the seeds' runs, not their parents


def history_rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "history.csv").open() as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- in-process


def test_shards_of_a_step_make_up_the_global_batch_and_weight_the_loss_to_its_mean():
    order = torch.randperm(203)
    per_rank = [list(sharded_batches(order, 64, Shard(rank, 3))) for rank in range(3)]
    assert [len(steps) for steps in per_rank] == [4, 4, 4]  # 64, 64, 64, 11
    for step, batch in enumerate(order.split(64)):
        parts = [per_rank[rank][step] for rank in range(3)]
        assert torch.equal(torch.cat([p.index for p in parts]), batch)
        assert {p.global_size for p in parts} == {batch.numel()}
        # DDP averages over ranks, so sum_r scale_r * mean_r / 3 is the global mean when every image's
        # weight scale_r / (3 n_r) is 1 / n
        assert [p.loss_scale / (3 * p.index.numel()) for p in parts] == pytest.approx([1 / batch.numel()] * 3)
    assert [p.index.numel() for p in (per_rank[r][3] for r in range(3))] == [4, 4, 3]
    assert list(sharded_batches(torch.arange(65), 64, Shard(0, 2)))[-1].index.numel() == 32  # 1 image: skipped
    assert [b.loss_scale for b in sharded_batches(order, 64)] == [1.0] * 4  # one process: unchanged


def test_ghost_batch_norm_normalises_each_part_and_updates_running_statistics_from_the_first():
    torch.manual_seed(0)
    x = torch.randn(10, 3, 4, 4)
    plain = nn.BatchNorm2d(3)
    ghost = use_ghost_batch_norm(nn.Sequential(nn.BatchNorm2d(3)), 2)[0]
    assert isinstance(ghost, GhostBatchNorm2d)
    assert ghost.state_dict().keys() == plain.state_dict().keys()
    out = ghost(x)
    first, second = plain(x[:5]), nn.BatchNorm2d(3)(x[5:])
    torch.testing.assert_close(out, torch.cat([first, second]))
    torch.testing.assert_close(ghost.running_mean, plain.running_mean)
    assert int(ghost.num_batches_tracked) == 1
    ghost.eval()
    plain.eval()
    torch.testing.assert_close(ghost(x), plain(x))


def test_spec_rules_of_sync_bn_bn_group_and_the_retired_bn_split(workdir, tiny_spec):
    spec = tiny_spec("bn")
    result = CliRunner().invoke(app, ["validate", str(spec), "--set", "runtime.device=cpu",
                                      "--set", "runtime.sync_bn=true"])
    assert result.exit_code == 2
    assert "runtime.sync_bn: SyncBatchNorm needs CUDA" in result.output
    result = CliRunner().invoke(app, ["validate", str(spec), "--set", "runtime.bn_group=24"])
    assert result.exit_code == 2
    assert "runtime.bn_group: a batch of 64 images does not split into BatchNorm groups of 24" in result.output
    result = CliRunner().invoke(app, ["validate", str(spec), "--set", "runtime.bn_group=16",
                                      "--set", "runtime.sync_bn=true"])
    assert result.exit_code == 2 and "ghost batch norm and SyncBatchNorm contradict each other" in result.output
    result = CliRunner().invoke(app, ["validate", str(spec), "--set", "runtime.bn_split=4"])
    assert result.exit_code == 2, result.output
    assert "runtime.bn_split: bn_split: 4 (parts of each process's batch)" in result.output
    assert "runtime.bn_group: 16 is what bn_split: 4 meant on one process" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    for ok in (["--set", "runtime.bn_split=1"], ["--set", "runtime.bn_group=16"]):
        assert CliRunner().invoke(app, ["validate", str(spec), *ok]).exit_code == 0


def test_bn_group_must_fit_each_process_share_of_the_batch():
    from auxcli.models.batchnorm import ghost_parts
    from auxcli.spec import Spec, launch_problems

    spec = Spec(name="g", train={"batch_size": 128}, runtime={"bn_group": 32})
    assert [ghost_parts(32, 128, w) for w in (1, 2, 4)] == [4, 2, 1]
    assert ghost_parts(None, 128, 2) == 1
    assert all(not launch_problems(spec, world_size=w, device_type="cpu") for w in (1, 2, 4))
    (problem,) = launch_problems(spec, world_size=8, device_type="cpu")
    assert problem.path == "runtime.bn_group"
    assert "each of the 8 processes gets 16 of the 128 images" in problem.message
    assert "a number of processes that divides 4" in problem.allowed


@pytest.mark.skipif(torch.cuda.is_available(), reason="device auto resolves to CUDA here")
def test_sync_bn_with_device_auto_on_a_cpu_machine_is_a_spec_error_at_run_time(workdir, tiny_spec):
    result = CliRunner().invoke(app, ["run", str(tiny_spec("sync")), "--set", "runtime.sync_bn=true"])
    assert result.exit_code == 2, result.output
    assert "spec 'sync' runtime.sync_bn: SyncBatchNorm needs CUDA (nccl); this run's device is cpu" in result.output
    assert not (workdir / "mlflow.db").exists()


def test_more_processes_than_gpus_is_an_error_before_anything_starts(workdir, tiny_spec):
    nproc = torch.cuda.device_count() + 1
    result = CliRunner().invoke(app, ["run", str(tiny_spec("gpus")), "--set", "runtime.device=cuda",
                                      "--nproc", str(nproc)])
    assert result.exit_code == 2, result.output
    assert f"--nproc {nproc}: runtime.device cuda needs one GPU per process" in result.output
    assert not (workdir / "runs").exists()


# ---------------------------------------------------------------------------------------------- torchrun


@pytest.mark.slow
@SUBPROCESS_RERUNS
def test_two_ranks_train_and_evaluate_as_one_process_does(tmp_path):
    """tests/ddp_worker.py: the real loop, one process vs 2 gloo ranks (K = 4 and 2 steps)."""
    worker = str(ROOT / "tests" / "ddp_worker.py")
    single = run([sys.executable, worker, str(tmp_path / "single")], tmp_path)
    assert single.returncode == 0, single.stderr
    ddp = run([*TORCHRUN, worker, str(tmp_path / "ddp")], tmp_path)
    assert ddp.returncode == 0, ddp.stderr
    one = torch.load(tmp_path / "single" / "rank0.pt", weights_only=False)
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]

    for rank in ranks:
        # linear backbone (no BatchNorm), no augmentation: 2 x 64 (and 37 + 36) equals 1 x 128 (and 73)
        for key, value in one["linear"].items():
            torch.testing.assert_close(rank["linear"][key], value, rtol=0, atol=1e-5)
        # ResNet: 2 ranks of plain BatchNorm equal one process with ghost batch norm in 2 parts: the
        # parameters, and rank 0's running statistics (ghost BN keeps the first part's), shared with every
        # rank after the epoch (`share_buffers`). Tolerance for float rounding through BatchNorm.
        for key, value in one["resnet"].items():
            torch.testing.assert_close(rank["resnet"][key].float(), value.float(), rtol=1e-4, atol=1e-4)
        # evaluation of the same weights on disjoint parts: bit-identical sums, clean and augmented
        assert rank["eval"] == one["eval"]
        assert rank["linear_sums"]["count"] == one["linear_sums"]["count"] == 201  # the last epoch, summed over ranks

    helpers = [rank["helpers"] for rank in ranks]
    assert [h["from_main"] for h in helpers] == [{"run_id": "made-by-rank-0"}] * 2  # rank 0's value, on both
    # an error on rank 1 only: both ranks raise it with its message and exit code; only rank 0 prints it
    assert [h["agree"] for h in helpers] == [("rank 1 cannot read the data", 2, False),
                                             ("rank 1 cannot read the data", 2, True)]
    # a parameter, then a BatchNorm statistic changed on rank 1 only: the replica check stops both ranks
    assert all("parameters of rank(s) [1] differ from rank 0's" in h["replicas"] for h in helpers)
    assert all("buffers (BatchNorm statistics) of rank(s) [1] differ" in h["buffers"] for h in helpers)


@pytest.fixture(scope="module")
def nproc_run(tmp_path_factory):
    """`auxcli run tiny.yaml --nproc 2`, once for the tests below that compare with it."""
    workdir = tmp_path_factory.mktemp("nproc")
    spec = workdir / "tiny.yaml"
    spec.write_text(TINY)
    result = run([sys.executable, "-m", "auxcli", "run", "tiny.yaml", "--nproc", "2"], workdir)
    return workdir, result


TINY = """\
name: tiny
data:
  dataset: synthetic
  root: data
  synthetic: {train_per_class: 2, test_per_class: 1}
model: {backbone: resnet, depth: 8, base_width: 4}
train: {epochs: 2, batch_size: 64, milestones: [1], eval_batch_size: 40}
runtime: {threads: 1}
"""


@pytest.mark.slow
@SUBPROCESS_RERUNS
def test_nproc_2_leaves_one_run_folder_and_one_finished_mlflow_run(nproc_run):
    workdir, result = nproc_run
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("tiny-s0 epoch 1/2") == 1  # progress from rank 0 only
    assert [p.name for p in (workdir / "runs").iterdir()] == ["tiny"]
    folder = workdir / "runs" / "tiny" / "seed-0"
    assert {"final.pt", "history.csv", "last.pt", "metrics.json", "spec.resolved.yaml"} <= {
        p.name for p in folder.iterdir()}
    assert [row["epoch"] for row in history_rows(folder)] == ["1", "2"]
    client, runs = runs_in_store(workdir)
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert runs[0].data.tags["auxcli.world_size"] == "2"
    assert EPOCH_METRICS <= runs[0].data.metrics.keys()
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "test_acc")] == [1, 2]


@pytest.mark.slow
@SUBPROCESS_RERUNS
def test_a_worker_that_dies_is_restarted_and_resumes_into_the_same_mlflow_run(tmp_path, nproc_run):
    (tmp_path / "tiny.yaml").write_text(TINY)
    marker = tmp_path / "rank-1-exited"
    result = run([*TORCHRUN, "--max-restarts=1", "-m", "auxcli", "run", "tiny.yaml"], tmp_path,
                 **{TEST_EXIT_ENV: f"1:2:{marker}"})
    assert result.returncode == 0, result.stderr
    assert marker.exists()  # rank 1 did die as epoch 2 started
    assert "tiny-s0: resuming after epoch 1." in result.stdout
    client, runs = runs_in_store(tmp_path)
    assert [r.info.status for r in runs] == ["FINISHED"]
    for metric in ("train_loss", "test_acc"):
        assert [m.step for m in client.get_metric_history(runs[0].info.run_id, metric)] == [1, 2]
    rows = history_rows(tmp_path / "runs" / "tiny" / "seed-0")
    assert [row["epoch"] for row in rows] == ["1", "2"]
    # the restarted job continued exactly where the uninterrupted one went
    uninterrupted = history_rows(nproc_run[0] / "runs" / "tiny" / "seed-0")
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert [row[key] for row in rows] == [row[key] for row in uninterrupted]


@pytest.mark.slow
@SUBPROCESS_RERUNS
def test_a_batch_that_does_not_split_over_the_processes_is_a_spec_error_on_every_rank(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY)
    result = run([sys.executable, "-m", "auxcli", "run", "tiny.yaml", "--nproc", "2",
                  "--set", "train.batch_size=63"], tmp_path)
    assert result.returncode == 2, result.stderr
    message = ("spec 'tiny' train.batch_size: the global batch of 63 images does not split into 2 equal "
               "per-process batches (torchrun world size 2); allowed: a multiple of 2")
    assert result.stderr.count(message) == 1  # printed by rank 0, not by rank 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nccl)")
def test_one_gpu_nccl_run_of_the_smoke_spec(tmp_path):
    spec = (ROOT / "specs" / "smoke.yaml").read_text()
    (tmp_path / "smoke.yaml").write_text(spec)
    result = run([sys.executable, "-m", "auxcli", "run", "smoke.yaml", "--nproc", "1", "--set", "runtime.device=cuda"],
                 tmp_path)
    assert result.returncode == 0, result.stderr
    assert [r.info.status for r in runs_in_store(tmp_path)[1]] == ["FINISHED"]
