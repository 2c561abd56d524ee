"""What `auxcli run --executor slurm` refuses before submitting anything (exit 2, one paragraph each).

- no `sbatch` on the PATH;
- more than one task per node: every task runs the job's whole `auxcli run` (torchrun with `--nproc`);
- a partition Slurm does not know (`sinfo`);
- the embedded SQLite store, or any file store: compute nodes cannot share one SQLite file (SQLite's
  locking does not work over network file systems), so every node must talk to one tracking server;
- a runs folder compute nodes cannot see: a node-local path (/tmp, /var/tmp, /dev/shm, /run, ...) is
  refused unless the launcher says `runs_dir_shared: true` (a one-node cluster, or a /tmp that really is
  shared). A path elsewhere is trusted: auxcli cannot prove a file system is mounted on every node
  without running a job there.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from auxcli.errors import LaunchError
from auxcli.spec import Spec

NODE_LOCAL = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/run"), Path("/scratch/local"))


def check_sbatch() -> str:
    found = shutil.which("sbatch")
    if not found:
        raise LaunchError("--executor slurm: no `sbatch` on the PATH, so no Slurm job can be submitted from here. "
                          "Run this on a Slurm login node (or load Slurm's module), or drop --executor slurm to "
                          "train on this machine.")
    return found


def check_one_task_per_node(tasks_per_node: int) -> None:
    if tasks_per_node != 1:
        raise LaunchError(f"Slurm launcher tasks_per_node {tasks_per_node}: each task of a job runs the job's whole "
                          f"`auxcli run` (with --nproc N, torchrun and its N processes), so {tasks_per_node} tasks "
                          "would train the same run as many times at once. Keep tasks_per_node: 1 and ask for "
                          "processes with --nproc N.")


def partitions() -> list[str]:
    out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
    return sorted({line.strip() for line in out.stdout.splitlines() if line.strip()})


def check_partition(name: str | None) -> None:
    if name is None:
        return
    known = partitions()
    if known and name not in known:
        raise LaunchError(f"Slurm launcher partition {name!r}: this cluster has no such partition; allowed: "
                          f"{', '.join(known)} (from sinfo). Set it with --slurm partition=NAME or in the "
                          "--launcher file.")


def check_tracking(specs: Sequence[Spec]) -> None:
    from auxcli.tracking import resolve_tracking_uri

    for spec in specs:
        uri = resolve_tracking_uri(spec.tracking.uri)
        if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
            raise LaunchError(f"--executor slurm with spec {spec.name!r}: its tracking store {uri} is a local "
                              "file, which jobs on several nodes cannot share (SQLite does not support a network "
                              "file system). Start one tracking server (README, 'A tracking server for a lab': "
                              "mlflow server --backend-store-uri postgresql://... --artifacts-destination ...) and "
                              "point every run at it: tracking.uri: http://HOST:5000 in the spec, --set "
                              "tracking.uri=http://HOST:5000, or MLFLOW_TRACKING_URI.")


def node_local(path: Path) -> Path | None:
    resolved = path.resolve()
    return next((root for root in NODE_LOCAL if resolved == root or root in resolved.parents), None)


def check_shared_folders(specs: Sequence[Spec], log_folder: Path, *, shared: bool) -> None:
    if shared:
        return
    from auxcli.project import anchored

    for what, path in [*((f"spec {s.name!r} runtime.runs_dir", anchored(s.runtime.runs_dir)) for s in specs),
                       ("the launcher's submitit_folder", log_folder)]:
        root = node_local(path)
        if root is not None:
            raise LaunchError(f"--executor slurm: {what} ({path.resolve()}) is under {root}, which is local to each "
                              "machine, so compute nodes would not see it. Use a folder on a shared file system "
                              "(runtime.runs_dir / submitit_folder), or, when it is shared (a one-node cluster), "
                              "say so with --slurm runs_dir_shared=true.")
