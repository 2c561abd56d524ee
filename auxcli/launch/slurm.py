"""`auxcli run --executor slurm`: one Slurm job per (spec, seed), submitted with submitit (issue 22).

A transfer's jobs wait for their sources' jobs (`--dependency=afterok:...`), so one command submits a
whole suite in order. Each job's id, executor and log paths are written to its run folder as
`slurm.json`; Slurm's own state comes from `squeue` (no slurmdbd needed: `sacct` is never asked), what a
finished job left from the run folder (`auxcli.catalogue`). Submitting again skips every job that is
done or still queued (pending, running, requeued), and `cancel` ends a suite's queued jobs.

`SlurmExecutor.submit` refuses what cannot work on a cluster first (`auxcli.launch.checks`), then prepares
what must exist before any job starts (`prepare`), then submits. With `--nproc N` each job runs torchrun
with N processes per node inside its allocation (`auxcli.launch.job.AuxcliRun`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from auxcli.launch.jobs import RunJob
from auxcli.launch.settings import SlurmSettings
from auxcli.runfolder import RunFolder, atomic_write_text

RECORD = "slurm.json"
# squeue states of a job that still holds or waits for a place (anything else has ended)
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
          "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "PREEMPTED"}


def record_path(job: RunJob) -> Path:
    return RunFolder.of(job.spec, job.seed).root / RECORD


def read_record(job: RunJob) -> dict | None:
    try:
        return json.loads(record_path(job).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def queue() -> dict[str, str]:
    """job id -> squeue state (upper case) of every job Slurm still lists; empty without squeue."""
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    pairs = (line.split() for line in out.stdout.splitlines())
    return {p[0]: p[1] for p in pairs if len(p) == 2}


def log_tail(record: dict, lines: int = 5) -> list[str]:
    """The last lines of a job's error log, else its output log."""
    for key in ("stderr", "stdout"):
        try:
            text = Path(record.get(key, "")).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if text.strip():
            return text.rstrip("\n").splitlines()[-lines:]
    return []


def slurm_state(job: RunJob, queued: dict[str, str]) -> str | None:
    """The Slurm side of a job for `auxcli plan`: pending, running, ... while Slurm lists it; `failed` when
    it has left the queue without a finished result; None when it was never submitted or is done."""
    record = read_record(job)
    if record is None:
        return None
    state = queued.get(str(record["job_id"]))
    if state is not None:
        return state.lower()
    finished = RunFolder.of(job.spec, job.seed).complete.exists()  # done, or finished as another identity
    return None if finished else "failed"


@dataclass
class SlurmHandle:
    """A submitted (or already queued) job: its Slurm id, its state from squeue, its result from the
    run folder."""

    job: RunJob
    job_id: str
    submitted: bool  # False: it was queued by an earlier command

    def state(self) -> str:
        from auxcli.catalogue import folder_state

        queued = queue().get(self.job_id)
        return queued.lower() if queued else folder_state(self.job.spec, self.job.seed)

    def result(self) -> str:
        """The run folder's catalogue state (done once the job finished and recorded its run)."""
        from auxcli.catalogue import folder_state

        return folder_state(self.job.spec, self.job.seed)


def log_folder(settings: SlurmSettings, jobs: Sequence[RunJob]) -> Path:
    """Job scripts and logs: the launcher's submitit_folder, else `<runs_dir>/.slurm` of the first spec."""
    from auxcli.project import anchored

    if settings.submitit_folder:
        return Path(settings.submitit_folder).absolute()
    runs = anchored(jobs[0].spec.runtime.runs_dir) if jobs else Path("runs")
    return (runs / ".slurm").absolute()


class SlurmExecutor:
    """Submit `RunJob`s to Slurm through submitit, with their dependencies."""

    name = "slurm"
    exit_code = 0  # a job that fails later shows in `auxcli plan`, not here

    def __init__(self, settings: SlurmSettings, log_folder: Path | None = None, *, nproc: int = 1,
                 python: str | None = None):
        self.settings = settings
        self.log_folder = log_folder  # None: `log_folder(settings, jobs)` when submitting
        self.nproc = nproc
        self.python = python or settings.python or sys.executable
        self.skipped: list[RunJob] = []  # done, or holding another result (stale): not submitted

    def check(self, jobs: Sequence[RunJob]) -> None:
        """Refuse, before anything is submitted, what cannot work on a cluster (`auxcli.launch.checks`)."""
        from auxcli.launch.checks import (check_one_task_per_node, check_partition, check_sbatch,
                                          check_shared_folders, check_tracking)

        check_sbatch()
        check_one_task_per_node(self.settings.tasks_per_node)
        specs = list({job.spec.name: job.spec for job in jobs}.values())
        check_tracking(specs)
        check_shared_folders(specs, self.log_folder, shared=self.settings.runs_dir_shared)
        check_partition(self.settings.partition)

    def prepare(self, jobs: Sequence[RunJob]) -> None:
        """Before launching: each spec's MLflow parent run, which its seeds' jobs would otherwise race to
        create when they start at once. Each job creates its data on its node (`auxcli.launch.checks` made
        sure the store is a server every node reaches)."""
        from auxcli.parentrun import open_spec_parents

        open_spec_parents([job.spec for job in jobs if job.state not in ("done", "stale")])

    def submit(self, jobs: Sequence[RunJob], *, resume: bool = False, force: bool = False) -> list[SlurmHandle]:
        """Check, prepare, then submit every job that is neither done (unless `force`) nor queued; handles of
        those queued or submitted now (`skipped`: the jobs not submitted)."""
        import submitit

        from auxcli.launch.job import AuxcliRun

        self.log_folder = self.log_folder or log_folder(self.settings, jobs)
        self.check(jobs)
        self.prepare(jobs)
        queued = queue()
        handles: dict[str, SlurmHandle] = {}
        executor = submitit.SlurmExecutor(folder=self.log_folder / "%j", max_num_timeout=self.settings.max_num_timeout,
                                          python=self.python)
        for job in jobs:
            record = read_record(job)
            if record is not None and queued.get(str(record["job_id"])) in ACTIVE:
                handles[job.label] = SlurmHandle(job, str(record["job_id"]), submitted=False)
                continue
            if job.state in ("done", "stale") and not force:  # stale: `auxcli run` would refuse it (exit 2)
                self.skipped.append(job)
                continue
            waits = [handles[label].job_id for label in job.after if label in handles]
            executor.update_parameters(**self.sbatch_parameters(job, waits))
            submitted = executor.submit(AuxcliRun(self.python, job.run_arguments(resume=resume, force=force),
                                                  self.nproc))
            handles[job.label] = SlurmHandle(job, str(submitted.job_id), submitted=True)
            self._write_record(job, submitted, waits)
        return list(handles.values())

    def report(self, handles: Sequence[SlurmHandle]) -> str:
        """One line per job: not submitted (done, stale), submitted (after which jobs) or already queued."""
        lines = [f"{job.label}: {job.state}, not submitted" + (" (--force replaces it)" if job.state == "stale"
                                                                  else "") for job in self.skipped]
        lines += [f"{h.job.label}: {'submitted' if h.submitted else 'already queued'} as Slurm job {h.job_id}"
                  + (f" (after {', '.join(h.job.after)})" if h.submitted and h.job.after else "") for h in handles]
        new = sum(h.submitted for h in handles)
        lines.append(f"{new} job{'s' * (new != 1)} submitted, {len(handles) - new} already queued; "
                     "`auxcli plan` shows their state, `auxcli cancel` cancels them")
        return "\n".join(lines)

    def sbatch_parameters(self, job: RunJob, waits: Sequence[str]) -> dict:
        s = self.settings
        params = {
            "job_name": job.label, "time": s.timeout_min, "nodes": s.nodes, "ntasks_per_node": s.tasks_per_node,
            "cpus_per_task": s.cpus_per_task, "gpus_per_node": s.gpus_per_node, "cpus_per_gpu": s.cpus_per_gpu,
            "gpus_per_task": s.gpus_per_task, "mem": f"{s.mem_gb}GB" if s.mem_gb else None,
            "mem_per_gpu": s.mem_per_gpu, "mem_per_cpu": s.mem_per_cpu, "partition": s.partition,
            "account": s.account, "qos": s.qos, "comment": s.comment, "constraint": s.constraint,
            "exclude": s.exclude, "gres": s.gres, "signal_delay_s": s.signal_delay_s, "setup": list(s.setup),
            "srun_args": list(s.srun_args) or None,
            "dependency": f"afterok:{':'.join(waits)}" if waits else None,
            "additional_parameters": {"kill_on_invalid_dep": "yes", **s.additional_parameters},
        }
        return {k: v for k, v in params.items() if v is not None}

    def _write_record(self, job: RunJob, submitted, waits: Sequence[str]) -> None:
        path = record_path(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"executor": self.name, "job_id": str(submitted.job_id), "job_name": job.label,
                  "stdout": str(submitted.paths.stdout), "stderr": str(submitted.paths.stderr),
                  "dependency": list(waits), "nproc": self.nproc, "nodes": self.settings.nodes,
                  "command": ["auxcli", "run", *job.run_arguments()],
                  "submitted_at": datetime.now(UTC).isoformat(timespec="seconds")}
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def cancel(jobs: Sequence[RunJob]) -> list[tuple[RunJob, str]]:
    """`scancel` every queued job of `jobs`; (job, Slurm id) of each one cancelled."""
    queued = queue()
    found = [(job, str(r["job_id"])) for job in jobs if (r := read_record(job)) and queued.get(str(r["job_id"]))]
    if found:
        subprocess.run(["scancel", *[job_id for _, job_id in found]], check=True, capture_output=True, timeout=60)
    return found
